//! The host-side commands: `setup`, `test`, `bench`, `vm`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use crate::accel::{self, Accel};
use crate::cargo::{self, Built, HostRun, Want, Workspace};
use crate::kernels;
use crate::libtest::Kind;
use crate::oldkernel::{self, OldKernel};
use crate::plan::{Binary, Plan, Results};
use crate::setup::{self, GuestRoot, Venv};
use crate::util::{err, fmt_duration, shell_quote, Result};
use crate::vm::Vm;
use crate::{bail, step};

/// Options shared by the host commands.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Force KVM or TCG (else decided automatically).
    pub accel: Option<Accel>,
    /// Per-binary timeout in the guest.
    pub test_timeout: Duration,
    /// Timeout for the whole VM run.
    pub vm_timeout: Duration,
    /// Guest memory.
    pub memory: String,
    /// Guest CPUs.
    pub cpus: usize,
    /// Show kernel messages on the console.
    pub verbose: bool,
    /// `vm`: boot the old (pre-6.0) kernel.
    pub old_kernel: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            accel: None,
            test_timeout: Duration::from_secs(600),
            vm_timeout: Duration::from_secs(40 * 60),
            memory: "4G".into(),
            cpus: std::thread::available_parallelism().map_or(2, |n| n.get()),
            verbose: false,
            old_kernel: false,
        }
    }
}

/// Everything needed to boot the VM.
pub struct Testbed {
    /// virtme-ng.
    pub venv: Venv,
    /// The guest root.
    pub root: GuestRoot,
    /// KVM or TCG.
    pub accel: Accel,
    /// The second, pre-6.0 kernel in the same root.
    pub old: OldKernel,
}

/// Installs / checks everything (host packages, venv, guest root, KVM probe).
pub fn ensure_testbed(opts: &Opts) -> Result<Testbed> {
    let t = Instant::now();
    let cache = setup::cache_dir()?;
    step!("setup: cache directory {}", cache.display());
    fs::create_dir_all(&cache).map_err(|e| err(format!("creating {}: {e}", cache.display())))?;
    let _lock = setup::CacheLock::acquire(&cache)?;
    setup::ensure_host_packages()?;
    let venv = setup::ensure_venv(&cache)?;
    let root = setup::ensure_guest_root(&cache)?;
    let old = oldkernel::ensure_old_kernel(&cache, &root)?;
    let accel = accel::decide(opts.accel, &cache, &venv, &root)?;
    step!("setup done in {}", fmt_duration(t.elapsed()));
    Ok(Testbed {
        venv,
        root,
        accel,
        old,
    })
}

/// `cargo xtask setup`.
pub fn cmd_setup(opts: &Opts) -> Result<ExitCode> {
    ensure_testbed(opts)?;
    step!("test bed ready");
    Ok(ExitCode::SUCCESS)
}

/// One line of the final report.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Whether this item is fine.
    pub ok: bool,
    /// What it is (`host: xtask unit tests`, `test dmabuf_sync_file`, `devices`, `VM`).
    pub name: String,
    /// Tests counted as passed.
    pub passed: u64,
    /// Tests counted as failed.
    pub failed: u64,
    /// How it ended, with the duration.
    pub end: String,
    /// Extra lines: libtest summaries, failed test names, problems, log path.
    pub notes: Vec<String>,
}

/// The whole report: rows and totals.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// One per item.
    pub rows: Vec<Row>,
}

impl Report {
    /// Sum of passed tests.
    pub fn passed(&self) -> u64 {
        self.rows.iter().map(|r| r.passed).sum()
    }

    /// Sum of failed tests.
    pub fn failed(&self) -> u64 {
        self.rows.iter().map(|r| r.failed).sum()
    }

    /// Whether everything is fine.
    pub fn ok(&self) -> bool {
        self.rows.iter().all(|r| r.ok) && self.failed() == 0
    }

    /// Adds a failure that is not a test (build, VM, device).
    pub fn fail(&mut self, name: &str, why: String) {
        self.rows.push(Row {
            ok: false,
            name: name.into(),
            passed: 0,
            failed: 1,
            end: why,
            notes: Vec::new(),
        });
    }

    /// Adds a host-side cargo test run.
    pub fn add_host(&mut self, h: &HostRun) {
        let mut notes = h.verdict.summaries.clone();
        notes.extend(h.verdict.problems.iter().map(|p| format!("problem: {p}")));
        if !h.verdict.failed_tests.is_empty() {
            notes.push(format!("failed: {}", h.verdict.failed_tests.join(", ")));
        }
        self.rows.push(Row {
            ok: h.verdict.ok,
            name: h.name.clone(),
            passed: h.verdict.passed,
            failed: h.verdict.failed,
            end: format!("{}, {}", h.end, fmt_duration(h.duration)),
            notes,
        });
    }

    /// Adds what the guest reported, given the plan it ran and how the VM
    /// ended (`vm_problem`: a timeout, a non-zero exit that the results do
    /// not explain, ...). Planned binaries without a result count as failed.
    pub fn add_guest(
        &mut self,
        plan: &Plan,
        results: Option<&Results>,
        vm_problem: Option<String>,
    ) {
        let Some(res) = results else {
            self.fail(
                "VM",
                format!(
                    "no results file from the guest ({})",
                    vm_problem.unwrap_or_else(|| "the VM died?".into())
                ),
            );
            for b in &plan.binaries {
                self.fail(&b.name, "did not run".into());
            }
            return;
        };
        for p in &res.device_problems {
            self.fail("devices", p.clone());
        }
        for b in &res.binaries {
            let v = &b.verdict;
            let mut notes = v.summaries.clone();
            if !v.failed_tests.is_empty() {
                notes.push(format!("failed: {}", v.failed_tests.join(", ")));
            }
            if !v.ignored_tests.is_empty() {
                notes.push(format!(
                    "ignored (not allowed in the VM): {}",
                    v.ignored_tests.join(", ")
                ));
            }
            for s in &v.skip_lines {
                notes.push(format!("skip line: {s}"));
            }
            notes.extend(v.problems.iter().map(|p| format!("problem: {p}")));
            if !v.ok {
                notes.push(format!("log: {}", b.log.display()));
            }
            self.rows.push(Row {
                ok: v.ok,
                name: b.name.clone(),
                passed: v.passed,
                failed: v.failed,
                end: format!(
                    "{}, {}",
                    b.end,
                    fmt_duration(Duration::from_secs_f64(b.duration_s))
                ),
                notes,
            });
        }
        for b in &plan.binaries {
            if !res.binaries.iter().any(|r| r.name == b.name) {
                self.fail(&b.name, "did not run (the VM stopped before it)".into());
            }
        }
        if !res.complete || vm_problem.is_some() {
            let why = vm_problem.unwrap_or_else(|| "the guest runner did not finish".into());
            self.fail("VM", why);
        }
    }

    /// Prints the rows.
    pub fn print(&self) {
        for r in &self.rows {
            step!(
                "{:<6} {:<40} {:>4} passed, {:>3} failed   ({})",
                if r.ok { "ok" } else { "FAILED" },
                r.name,
                r.passed,
                r.failed,
                r.end
            );
            for n in &r.notes {
                step!("         {n}");
            }
        }
    }
}

/// Directories the VM gets read-write at the same path: the workspace, and
/// the target directory if it lies elsewhere.
fn shared_dirs(ws: &Workspace) -> Vec<PathBuf> {
    let mut dirs = vec![ws.root.clone()];
    if !ws.target_dir.starts_with(&ws.root) {
        dirs.push(ws.target_dir.clone());
    }
    dirs
}

/// The output of one VM run.
struct GuestRun {
    /// The guest's results file, if it wrote one.
    results: Option<Results>,
    /// A VM-level failure (timeout, unexplained non-zero exit, no results).
    vm_problem: Option<String>,
}

/// Writes the plan, boots the VM, runs the guest runner, reads the results.
fn boot_and_run(
    tb: &Testbed,
    root: &GuestRoot,
    ws: &Workspace,
    opts: &Opts,
    mut plan: Plan,
    vm_dir: &Path,
) -> Result<GuestRun> {
    // The guest runs a copy of this very binary (built for the host, runs
    // unchanged on the trixie guest).
    let exe = std::env::current_exe()?;
    let guest_exe = vm_dir.join("xtask");
    fs::copy(&exe, &guest_exe).map_err(|e| {
        err(format!(
            "copying {} to {}: {e}",
            exe.display(),
            guest_exe.display()
        ))
    })?;
    let plan_path = vm_dir.join("plan.json");
    plan.results = vm_dir.join("results.json");
    let _ = fs::remove_file(&plan.results);
    fs::write(&plan_path, serde_json::to_string_pretty(&plan)? + "\n")?;

    let vm = vm_for(
        tb,
        root,
        ws,
        opts,
        Some(format!(
            "echo '{}'; cd {} && {} guest --plan {}",
            crate::vm::BOOTED,
            shell_quote(&ws.root.to_string_lossy()),
            shell_quote(&guest_exe.to_string_lossy()),
            shell_quote(&plan_path.to_string_lossy())
        )),
    );
    vm.prepare()?;
    let log = vm_dir.join("vm.log");
    step!(
        "booting VM ({}, {} CPU(s), {} RAM, kernel {}; {} binaries; VM timeout {}; console log {})",
        tb.accel.name(),
        opts.cpus,
        opts.memory,
        root.kernel_release,
        plan.binaries.len(),
        fmt_duration(opts.vm_timeout),
        log.display()
    );
    let t = Instant::now();
    let done = vm.run(opts.vm_timeout, &log)?;
    let end = done.describe_end(Some(opts.vm_timeout));
    step!("VM finished in {} ({end})", fmt_duration(t.elapsed()));
    let results: Option<Results> = fs::read_to_string(&plan.results)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    let guest_ok = results.as_ref().is_some_and(|r| {
        r.complete && r.device_problems.is_empty() && r.binaries.iter().all(|b| b.verdict.ok)
    });
    // vng returns the guest command's status; a failure the results do not
    // explain (or any timeout) is a VM problem of its own.
    let vm_problem = if done.timed_out {
        Some(format!(
            "VM {end} at stage: {}",
            crate::vm::stage_of(&done.output)
        ))
    } else if results.is_none() {
        Some(format!("vng {end}"))
    } else if done.success() != guest_ok {
        Some(format!(
            "vng {end}, but the guest results say {}",
            if guest_ok { "ok" } else { "failed" }
        ))
    } else {
        None
    };
    // (A timeout has said its stage and shown the console already.)
    if !done.timed_out && (vm_problem.is_some() || results.as_ref().is_some_and(|r| !r.complete)) {
        crate::vm::print_console_tail(&done.output, &log);
        if !opts.verbose {
            step!("(kernel messages are hidden: run again with --verbose to see them)");
        }
    }
    Ok(GuestRun {
        results,
        vm_problem,
    })
}

/// Prints the guest's kernel, device list and device problems.
fn print_devices(results: Option<&Results>) {
    if let Some(r) = results {
        step!("guest kernel {}; devices:", r.kernel);
        for d in &r.devices {
            step!("  {:<24} {}", d.node, d.driver);
        }
        for p in &r.device_problems {
            step!("  PROBLEM: {p}");
        }
    }
}

/// The plan for the guest runner: `built` binaries, each run with `args`
/// and the extra environment `env`.
fn plan_for(
    ws: &Workspace,
    opts: &Opts,
    vm_dir: &Path,
    built: &[Built],
    args: &[&str],
    env: Vec<(String, String)>,
) -> Plan {
    Plan {
        workspace: ws.root.clone(),
        crate_dir: ws.winsys_dir.clone(),
        results: vm_dir.join("results.json"),
        log_dir: vm_dir.join("logs"),
        timeout_s: opts.test_timeout.as_secs(),
        require_devices: true,
        lacks: Vec::new(),
        env,
        binaries: built
            .iter()
            .map(|b| Binary {
                name: b.name.clone(),
                kind: b.kind,
                path: b.path.clone(),
                args: match (b.kind, example_args(&b.name)) {
                    (Kind::Example, Some(own)) => own,
                    _ => args,
                }
                .iter()
                .map(|s| s.to_string())
                .collect(),
                expect_filtered: None,
            })
            .collect(),
    }
}

/// Examples that need arguments in the VM: the cube presents to a
/// headless weston of its own.
fn example_args(name: &str) -> Option<&'static [&'static str]> {
    match name {
        // Waits bounded by 30 s: the VM may have one emulated CPU.
        "example cube" => Some(&[
            "--weston",
            "--frames",
            "120",
            "--validation",
            "--timeout",
            "30",
        ]),
        // The reference compositor with the cube as its client.
        "example compositor" => Some(&[
            "--validation",
            "--run",
            "cube",
            "--frames",
            "60",
            "--validation",
            "--timeout",
            "30",
        ]),
        _ => None,
    }
}

/// The plan for the old kernel: the binaries that need nothing it lacks,
/// each with the `--skip`s its declared tests need, named `NAME @ RELEASE`.
fn old_kernel_plan(
    ws: &Workspace,
    opts: &Opts,
    vm_dir: &Path,
    built: &[Built],
    mut env: Vec<(String, String)>,
    release: &str,
) -> Plan {
    let lacks = kernels::OLD_KERNEL_LACKS;
    env.push((
        kernels::LACKS_ENV.to_string(),
        kernels::names(lacks).replace(", ", ","),
    ));
    let mut plan = plan_for(ws, opts, vm_dir, &[], &[], env);
    plan.lacks = lacks.to_vec();
    for b in built {
        let (args, expect_filtered) = match kernels::select(&b.name, lacks) {
            kernels::Selection::None(_) => continue,
            kernels::Selection::All => (Vec::new(), None),
            kernels::Selection::Skip(skips) => {
                (kernels::skip_args(&skips), Some(skips.len() as u64))
            }
        };
        plan.binaries.push(Binary {
            name: format!("{} @ {release}", b.name),
            kind: b.kind,
            path: b.path.clone(),
            args,
            expect_filtered,
        });
    }
    plan
}

/// `target/NAME/` (`winsys-vm`, `winsys-vm-5.10`), with an empty `logs/`
/// in it.
fn fresh_vm_dir(ws: &Workspace, name: &str) -> Result<PathBuf> {
    let vm_dir = ws.target_dir.join(name);
    let logs = vm_dir.join("logs");
    if logs.exists() {
        fs::remove_dir_all(&logs)?;
    }
    fs::create_dir_all(&logs)?;
    Ok(vm_dir)
}

/// `cargo xtask test`.
pub fn cmd_test(opts: &Opts) -> Result<ExitCode> {
    let t0 = Instant::now();
    let ws = cargo::workspace()?;
    step!("winsys test bed: workspace {}", ws.root.display());
    // Host packages first: building the gbm feature needs libgbm-dev.
    let tb = ensure_testbed(opts)?;
    let mut report = Report::default();

    let host_timeout = Duration::from_secs(30 * 60);
    for (name, args) in [
        ("host: xtask unit tests", &["test", "-p", "xtask"][..]),
        (
            "host: winsys lib unit tests",
            &["test", "-p", "winsys", "--lib", "--all-features"][..],
        ),
        // Doc examples are `no_run` (they need devices): this compiles them.
        (
            "host: winsys doc examples",
            &["test", "-p", "winsys", "--doc", "--all-features"][..],
        ),
    ] {
        match cargo::run_host_tests(&ws, name, args, host_timeout) {
            Ok(h) => report.add_host(&h),
            Err(e) => report.fail(name, e.to_string()),
        }
    }

    let tests = cargo::build(
        &ws,
        &[
            "test",
            "--workspace",
            "--exclude",
            "xtask",
            "--no-run",
            "--all-features",
        ],
        Want::Tests,
    );
    let examples = cargo::build(
        &ws,
        // The layer's library too: tests/layer.rs runs apps through it.
        &[
            "build",
            "-p",
            "winsys",
            "-p",
            "winsys-layer",
            "--lib",
            "--bins",
            "--examples",
            "--all-features",
        ],
        Want::Examples,
    );
    let mut results = None;
    let mut old_results = None;
    match (tests, examples) {
        (Ok(tests), Ok(examples)) => {
            let built: Vec<Built> = tests.into_iter().chain(examples).collect();
            let env = vec![
                ("WINSYS_REQUIRE_DEVICES".to_string(), "1".to_string()),
                // Make test output (and any SKIP line) visible even for passing tests.
                ("RUST_TEST_NOCAPTURE".to_string(), "1".to_string()),
                ("RUST_BACKTRACE".to_string(), "1".to_string()),
            ];
            // Every test on the current kernel, which lacks nothing.
            let vm_dir = fresh_vm_dir(&ws, "winsys-vm")?;
            let mut new_env = env.clone();
            new_env.push((kernels::LACKS_ENV.to_string(), String::new()));
            let plan = plan_for(&ws, opts, &vm_dir, &built, &[], new_env);
            let run = boot_and_run(&tb, &tb.root, &ws, opts, plan.clone(), &vm_dir)?;
            report.add_guest(&plan, run.results.as_ref(), run.vm_problem);
            results = run.results;
            // Everything that does not need what 5.10 lacks, on 5.10.
            let old_root = tb.old.root(&tb.root);
            let vm_dir = fresh_vm_dir(&ws, "winsys-vm-old")?;
            let plan = old_kernel_plan(&ws, opts, &vm_dir, &built, env, &tb.old.release);
            for b in &built {
                if let kernels::Selection::None(lacking) =
                    kernels::select(&b.name, kernels::OLD_KERNEL_LACKS)
                {
                    step!(
                        "{} {}: not run (declared to need {})",
                        tb.old.release,
                        b.name,
                        kernels::names(&lacking)
                    );
                }
            }
            let run = boot_and_run(&tb, &old_root, &ws, opts, plan.clone(), &vm_dir)?;
            report.add_guest(&plan, run.results.as_ref(), run.vm_problem);
            old_results = run.results;
        }
        (t, e) => {
            for r in [t, e] {
                if let Err(e) = r {
                    report.fail("build", e.to_string());
                }
            }
        }
    }

    step!("==== summary ====");
    print_devices(results.as_ref());
    print_devices(old_results.as_ref());
    report.print();
    step!("total time {}", fmt_duration(t0.elapsed()));
    println!(
        "winsys: {} passed, {} failed",
        report.passed(),
        report.failed()
    );
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Builds `cargo_args` (selecting `want`), runs every result in one VM with
/// `args` and `env` (devices required), prints the summary and returns the
/// report. Shared by `bench` and `demo`.
fn run_built_in_vm(
    opts: &Opts,
    what: &str,
    cargo_args: &[&str],
    want: Want,
    args: &[&str],
    extra_env: Vec<(String, String)>,
) -> Result<Report> {
    let t0 = Instant::now();
    let ws = cargo::workspace()?;
    step!("winsys {what}: workspace {}", ws.root.display());
    let tb = ensure_testbed(opts)?;
    let built = cargo::build(&ws, cargo_args, want)?;
    if built.is_empty() {
        bail!("nothing to run for {what}: the build produced no executables");
    }
    let vm_dir = fresh_vm_dir(&ws, "winsys-vm")?;
    let mut env = vec![
        ("WINSYS_REQUIRE_DEVICES".to_string(), "1".to_string()),
        ("RUST_BACKTRACE".to_string(), "1".to_string()),
    ];
    env.extend(extra_env);
    let plan = plan_for(&ws, opts, &vm_dir, &built, args, env);
    let run = boot_and_run(&tb, &tb.root, &ws, opts, plan.clone(), &vm_dir)?;
    let mut report = Report::default();
    report.add_guest(&plan, run.results.as_ref(), run.vm_problem);
    step!("==== summary ====");
    print_devices(run.results.as_ref());
    report.print();
    step!("total time {}", fmt_duration(t0.elapsed()));
    Ok(report)
}

fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `cargo xtask bench`: the benchmarks (release) in the VM; they write
/// `target/bench/results.json`.
pub fn cmd_bench(opts: &Opts, name: Option<&str>) -> Result<ExitCode> {
    let ws = cargo::workspace()?;
    let out_dir = ws.target_dir.join("bench");
    fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("results.json");
    let _ = fs::remove_file(&out);
    // The presentation bench runs the cube example, in release too.
    step!("building the examples (release) for the presentation bench");
    cargo::build(
        &ws,
        &[
            "build",
            "--release",
            "-p",
            "winsys",
            "-p",
            "winsys-layer",
            "--lib",
            "--bins",
            "--examples",
            "--all-features",
        ],
        Want::Examples,
    )?;
    let mut cargo_args = vec!["bench", "-p", "winsys", "--all-features", "--no-run"];
    if let Some(n) = name {
        cargo_args.extend(["--bench", n]);
    }
    let mut env = vec![(
        "WINSYS_BENCH_OUT".to_string(),
        out.to_string_lossy().into_owned(),
    )];
    // The benches' own knobs, passed on from this shell.
    for var in ["WINSYS_BENCH_RUN_SECONDS", "WINSYS_BENCH_ONLY"] {
        if let Ok(v) = std::env::var(var) {
            env.push((var.to_string(), v));
        }
    }
    let mut report = run_built_in_vm(
        opts,
        "benchmarks",
        &cargo_args,
        Want::Benches,
        &["--bench"],
        env,
    )?;
    if out.is_file() {
        step!("bench results: {}", out.display());
    } else {
        report.fail(
            "bench results",
            format!("{} was not written", out.display()),
        );
    }
    println!(
        "winsys bench: {} ok, {} failed",
        report.passed(),
        report.failed()
    );
    Ok(exit_code(report.ok()))
}

/// `cargo xtask demo`: the main job. Builds the tool and the examples
/// (release), then runs `xtask/src/demo.sh` — `winsys info`, `winsys
/// interop`, the cube through winsys (automatic and explicit sync) and
/// through Mesa's WSI on a headless weston and on sway, each figure
/// explained, the reference compositor with the cube as its client — inside
/// the VM test bed (installed on first use), or natively where this
/// machine has `/dev/dri` and a `WAYLAND_DISPLAY`. Everything lands in
/// `target/demo/`: the screenshot, the reports (text, JSON, HTML) and the
/// cube's figures.
pub fn cmd_demo(opts: &Opts) -> Result<ExitCode> {
    let t0 = Instant::now();
    let ws = cargo::workspace()?;
    let out = ws.target_dir.join("demo");
    if out.exists() {
        fs::remove_dir_all(&out)?;
    }
    fs::create_dir_all(&out)?;
    let script = out.join("run.sh");
    fs::write(&script, include_str!("demo.sh"))?;
    let native = Path::new("/dev/dri").exists() && std::env::var_os("WAYLAND_DISPLAY").is_some();
    // Set up before building: building the gbm feature needs libgbm-dev,
    // which a fresh machine lacks (the VM case sets up everything else too).
    let tb = if native {
        setup::ensure_host_packages()?;
        None
    } else {
        Some(ensure_testbed(opts)?)
    };
    step!("building the winsys tool and the examples (release)");
    cargo::build(
        &ws,
        &[
            "build",
            "--release",
            "-p",
            "winsys",
            "-p",
            "winsys-layer",
            "--lib",
            "--examples",
            "--bins",
            "--all-features",
        ],
        Want::Examples,
    )?;
    let bin = ws.target_dir.join("release");
    let args = [script.as_path(), out.as_path(), bin.as_path()]
        .map(|p| shell_quote(&p.to_string_lossy()))
        .join(" ");
    let status = if let Some(tb) = tb {
        step!("no devices here: running in the VM test bed (the embedded default)");
        let exec = crate::vm::staged(GUEST_PREP, &format!("sh {args}"));
        let vm = vm_for(&tb, &tb.root, &ws, opts, Some(exec));
        let done = boot(&vm, opts, &out.join("vm.log"))?;
        if done.timed_out {
            step!("the demo's VM timed out: see above");
        }
        done.success()
    } else {
        step!("this machine has /dev/dri and a WAYLAND_DISPLAY: running natively");
        Command::new("sh")
            .args([script.as_os_str(), out.as_os_str(), bin.as_os_str()])
            .status()
            .map_err(|e| err(format!("cannot run sh: {e}")))?
            .success()
    };
    let files = [
        "screenshot.png",
        "info.txt",
        "info.json",
        "info.html",
        "interop.txt",
        "interop.json",
        "interop.html",
        "cube-winsys.txt",
        "cube-mesa.txt",
        "cube-explicit.txt",
        "compositor.txt",
        "vkcube-layer.png",
        "vkcube-layer.txt",
        "layer-report.jsonl",
    ];
    step!("==== demo ====");
    let mut missing = Vec::new();
    for f in files {
        let p = out.join(f);
        if p.is_file() {
            step!("  {}", p.display());
        } else {
            missing.push(f);
        }
    }
    step!("total time {}", fmt_duration(t0.elapsed()));
    if status && missing.is_empty() {
        println!("winsys demo: everything in {}", out.display());
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "winsys demo: failed; missing: {}",
            if missing.is_empty() {
                "nothing".to_string()
            } else {
                missing.join(", ")
            }
        );
        Ok(ExitCode::FAILURE)
    }
}

/// Sets a guest shell up for a command: drivers loaded, HOME, caches and
/// the runtime directory on a tmpfs (the guest's own HOME is read-only).
const GUEST_PREP: &str =
    "modprobe -a vgem virtio-gpu; mkdir -p /run/winsys/home /run/winsys/runtime; \
chmod 700 /run/winsys/runtime; export HOME=/run/winsys/home XDG_CACHE_HOME=/run/winsys/home/.cache \
XDG_RUNTIME_DIR=/run/winsys/runtime";

/// Boots `vm` (whose command came from [`crate::vm::staged`]), bounded by
/// `--vm-timeout`, its console echoed and kept in `log`.
fn boot(vm: &Vm<'_>, opts: &Opts, log: &Path) -> Result<crate::util::Finished> {
    vm.prepare()?;
    step!(
        "booting VM ({}, VM timeout {}; console log {})",
        vm.accel.name(),
        fmt_duration(opts.vm_timeout),
        log.display()
    );
    vm.run(opts.vm_timeout, log)
}

/// The project's VM on the test bed `tb`, running `exec` (None: a shell).
fn vm_for<'a>(
    tb: &'a Testbed,
    root: &'a GuestRoot,
    ws: &Workspace,
    opts: &Opts,
    exec: Option<String>,
) -> Vm<'a> {
    Vm {
        venv: &tb.venv,
        root,
        accel: tb.accel,
        memory: opts.memory.clone(),
        cpus: opts.cpus,
        rwdirs: shared_dirs(ws),
        exec,
        verbose: opts.verbose,
    }
}

/// `cargo xtask vm [-- CMD...]`: boots the same VM (devices loaded, project
/// mounted) and runs CMD, or an interactive shell without CMD.
pub fn cmd_vm(opts: &Opts, command: &[String]) -> Result<ExitCode> {
    let ws = cargo::workspace()?;
    let tb = ensure_testbed(opts)?;
    let prep = format!("{GUEST_PREP} WINSYS_REQUIRE_DEVICES=1");
    let exec = if command.is_empty() {
        step!("interactive shell; load the drivers with: modprobe -a vgem virtio-gpu");
        None
    } else {
        let cmd: Vec<String> = command.iter().map(|a| shell_quote(a)).collect();
        let cwd = std::env::current_dir()?;
        Some(crate::vm::staged(
            &prep,
            &format!(
                "cd {} && {}",
                shell_quote(&cwd.to_string_lossy()),
                cmd.join(" ")
            ),
        ))
    };
    let old_root = tb.old.root(&tb.root);
    let root = if opts.old_kernel { &old_root } else { &tb.root };
    let vm = vm_for(&tb, root, &ws, opts, exec);
    if vm.exec.is_none() {
        vm.prepare()?;
        // Interactive: the terminal is the guest's; no timeout.
        step!("booting VM ({})", tb.accel.name());
        let status = vm
            .command()
            .status()
            .map_err(|e| err(format!("cannot run vng: {e}")))?;
        return Ok(exit_code(status.success()));
    }
    let dir = ws.target_dir.join("winsys-vm-cmd");
    fs::create_dir_all(&dir)?;
    let done = boot(&vm, opts, &dir.join("vm.log"))?;
    if done.timed_out {
        bail!("the VM run timed out (see above)");
    }
    match done.status.and_then(|s| s.code()) {
        Some(0) => Ok(ExitCode::SUCCESS),
        Some(c) => Ok(ExitCode::from(u8::try_from(c).unwrap_or(1))),
        None => bail!("vng: {}", done.describe_end(None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libtest::{evaluate, Kind};
    use crate::plan::BinaryResult;

    fn plan(names: &[&str]) -> Plan {
        Plan {
            workspace: "/w".into(),
            crate_dir: "/w/winsys".into(),
            results: "/w/target/winsys-vm/results.json".into(),
            log_dir: "/w/target/winsys-vm/logs".into(),
            timeout_s: 600,
            require_devices: true,
            lacks: vec![],
            env: vec![],
            binaries: names
                .iter()
                .map(|n| Binary {
                    name: n.to_string(),
                    kind: Kind::Test,
                    path: "/x".into(),
                    args: vec![],
                    expect_filtered: None,
                })
                .collect(),
        }
    }

    fn result(name: &str, out: &str, ok_exit: bool) -> BinaryResult {
        BinaryResult {
            name: name.into(),
            kind: Kind::Test,
            end: "exit status 0".into(),
            duration_s: 1.0,
            log: "/l".into(),
            verdict: evaluate(Kind::Test, out, ok_exit, false, "exit status 0", true),
        }
    }

    const OK3: &str = "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.1s";

    #[test]
    fn all_good() {
        let p = plan(&["test a", "test b"]);
        let r = Results {
            complete: true,
            binaries: vec![result("test a", OK3, true), result("test b", OK3, true)],
            ..Results::default()
        };
        let mut rep = Report::default();
        rep.add_guest(&p, Some(&r), None);
        assert!(rep.ok());
        assert_eq!((rep.passed(), rep.failed()), (6, 0));
    }

    #[test]
    fn missing_results_fail_every_binary() {
        let p = plan(&["test a", "test b"]);
        let mut rep = Report::default();
        rep.add_guest(&p, None, Some("vng exit status 1".into()));
        assert!(!rep.ok());
        assert_eq!((rep.passed(), rep.failed()), (0, 3));
    }

    #[test]
    fn partial_results_and_device_problems() {
        let p = plan(&["test a", "test b"]);
        let r = Results {
            complete: false,
            device_problems: vec!["missing device: /dev/udmabuf".into()],
            binaries: vec![result("test a", OK3, true)],
            ..Results::default()
        };
        let mut rep = Report::default();
        rep.add_guest(&p, Some(&r), Some("VM TIMED OUT".into()));
        // 3 passed; failures: device, test b not run, VM.
        assert_eq!((rep.passed(), rep.failed()), (3, 3));
        assert!(!rep.ok());
    }
}
