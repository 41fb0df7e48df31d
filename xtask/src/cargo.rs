//! Running cargo on the host: workspace metadata, building test / example /
//! bench executables (collected from `--message-format=json`), and running
//! host-only unit tests.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::libtest::{evaluate, Kind, Verdict};
use crate::util::{describe, err, fmt_duration, run_streaming, Result, StreamOpts};
use crate::{bail, step};

/// The cargo to run (the one that runs us, if known).
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Where things are.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The workspace root (contains Cargo.toml, and usually target/).
    pub root: PathBuf,
    /// Cargo's target directory.
    pub target_dir: PathBuf,
    /// The directory of the `winsys` crate.
    pub winsys_dir: PathBuf,
}

/// Reads `cargo metadata --no-deps` for the workspace around the current
/// directory (where `cargo xtask` was run).
pub fn workspace() -> Result<Workspace> {
    let out = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| err(format!("cannot run cargo metadata: {e}")))?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", out.status);
    }
    parse_metadata(&String::from_utf8_lossy(&out.stdout))
}

/// Extracts the [`Workspace`] from `cargo metadata` JSON.
pub fn parse_metadata(json: &str) -> Result<Workspace> {
    let v: Value = serde_json::from_str(json)?;
    let root = v["workspace_root"]
        .as_str()
        .ok_or_else(|| err("cargo metadata: no workspace_root"))?;
    let target = v["target_directory"]
        .as_str()
        .ok_or_else(|| err("cargo metadata: no target_directory"))?;
    let winsys = v["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "winsys")
        .and_then(|p| p["manifest_path"].as_str())
        .and_then(|m| Path::new(m).parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(root).join("winsys"));
    Ok(Workspace {
        root: root.into(),
        target_dir: target.into(),
        winsys_dir: winsys,
    })
}

/// A `compiler-artifact` message of cargo's JSON output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Target name (`dmabuf_sync_file`, `winsys`, `handoff`).
    pub name: String,
    /// Target kinds (`lib`, `test`, `example`, `bench`, `bin`).
    pub kinds: Vec<String>,
    /// Whether it was built with the test harness (`profile.test`).
    pub test: bool,
    /// The executable, if one was produced.
    pub executable: Option<PathBuf>,
}

/// Parses one line of cargo's `--message-format=json` output into an
/// artifact (None for other messages).
pub fn parse_artifact(line: &str) -> Option<Artifact> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["reason"] != "compiler-artifact" {
        return None;
    }
    Some(Artifact {
        name: v["target"]["name"].as_str()?.to_string(),
        kinds: v["target"]["kind"]
            .as_array()?
            .iter()
            .filter_map(|k| k.as_str().map(String::from))
            .collect(),
        test: v["profile"]["test"].as_bool().unwrap_or(false),
        executable: v["executable"].as_str().map(PathBuf::from),
    })
}

/// Which executables a build is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Artifacts built with the test harness (`profile.test == true`).
    Tests,
    /// Example executables.
    Examples,
    /// Bench executables.
    Benches,
}

impl Want {
    /// Whether the artifact is one of these, and under which display name.
    pub fn select(self, a: &Artifact) -> Option<(String, Kind)> {
        a.executable.as_ref()?;
        let kind0 = a.kinds.first().map(String::as_str).unwrap_or("?");
        match self {
            // An example's unit tests (`test = true`) are not the example:
            // a name of their own (logs, results, the did-not-run check).
            Want::Tests if a.test && kind0 == "example" => {
                Some((format!("example {} (unit tests)", a.name), Kind::Test))
            }
            Want::Tests if a.test => Some((format!("{kind0} {}", a.name), Kind::Test)),
            Want::Examples if !a.test && a.kinds.iter().any(|k| k == "example") => {
                Some((format!("example {}", a.name), Kind::Example))
            }
            Want::Benches if a.kinds.iter().any(|k| k == "bench") => {
                Some((format!("bench {}", a.name), Kind::Bench))
            }
            _ => None,
        }
    }
}

/// A built executable to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// Display name.
    pub name: String,
    /// How to judge it.
    pub kind: Kind,
    /// The executable.
    pub path: PathBuf,
}

/// Runs `cargo ARGS --message-format=json` in the workspace and returns the
/// wanted executables. Compiler diagnostics are printed as cargo would.
pub fn build(ws: &Workspace, args: &[&str], want: Want) -> Result<Vec<Built>> {
    let mut cmd = cargo();
    cmd.args(args)
        .arg("--message-format=json")
        .current_dir(&ws.root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let what = describe(&cmd);
    step!("building: {what}");
    let t = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| err(format!("cannot run cargo: {e}")))?;
    let stdout = child.stdout.take().expect("piped");
    let mut found: Vec<Built> = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(a) = parse_artifact(&line) {
            if let Some((name, kind)) = want.select(&a) {
                let path = a.executable.clone().expect("selected artifacts have one");
                if !found.iter().any(|b| b.path == path) {
                    found.push(Built { name, kind, path });
                }
            }
        } else if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["reason"] == "compiler-message" {
                if let Some(r) = v["message"]["rendered"].as_str() {
                    let mut e = std::io::stderr().lock();
                    let _ = e.write_all(r.as_bytes());
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("build failed ({status}): {what}");
    }
    // cargo reports artifacts in build order, which varies: run in a stable
    // order (the library's unit tests first, then by name).
    found.sort_by(|a, b| {
        (!a.name.starts_with("lib "), &a.name).cmp(&(!b.name.starts_with("lib "), &b.name))
    });
    step!(
        "built in {}: {}",
        fmt_duration(t.elapsed()),
        if found.is_empty() {
            "nothing to run".to_string()
        } else {
            found
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    Ok(found)
}

/// The outcome of a host-side `cargo test` run.
#[derive(Debug, Clone)]
pub struct HostRun {
    /// Display name.
    pub name: String,
    /// How it ended.
    pub end: String,
    /// Judgement (lax: ignored tests and SKIP lines are allowed on the host,
    /// which has no devices).
    pub verdict: Verdict,
    /// Run time (including the build).
    pub duration: Duration,
}

/// Runs `cargo ARGS` (a `cargo test` of host-only unit tests) with its
/// output streamed, and judges its libtest summaries.
pub fn run_host_tests(
    ws: &Workspace,
    name: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<HostRun> {
    let mut cmd = cargo();
    cmd.args(args).current_dir(&ws.root);
    step!("START {name}: {}", describe(&cmd));
    let done = run_streaming(
        &mut cmd,
        StreamOpts {
            timeout: Some(timeout),
            echo: true,
            log: None,
            own_group: false,
            marker: None,
        },
    )?;
    let end = done.describe_end(Some(timeout));
    let verdict = evaluate(
        Kind::Test,
        &done.output,
        done.success(),
        done.timed_out,
        &end,
        false,
    );
    step!(
        "END   {name}: {} ({} passed, {} failed; {}, {})",
        if verdict.ok { "ok" } else { "FAILED" },
        verdict.passed,
        verdict.failed,
        end,
        fmt_duration(done.duration)
    );
    Ok(HostRun {
        name: name.to_string(),
        end,
        verdict,
        duration: done.duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_ARTIFACT: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/winsys#0.1.0","manifest_path":"/w/winsys/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"dmabuf_sync_file","src_path":"/w/tests/dmabuf_sync_file.rs","edition":"2021","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":true},"features":[],"filenames":["/w/target/debug/deps/dmabuf_sync_file-1234"],"executable":"/w/target/debug/deps/dmabuf_sync_file-1234","fresh":true}"#;
    const LIB_ARTIFACT: &str = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"winsys"},"profile":{"test":false},"filenames":["/w/target/debug/libwinsys.rlib"],"executable":null,"fresh":true}"#;
    const EXAMPLE_ARTIFACT: &str = r#"{"reason":"compiler-artifact","target":{"kind":["example"],"name":"handoff"},"profile":{"test":false},"executable":"/w/target/debug/examples/handoff","fresh":false}"#;
    const BENCH_ARTIFACT: &str = r#"{"reason":"compiler-artifact","target":{"kind":["bench"],"name":"throughput"},"profile":{"test":true},"executable":"/w/target/release/deps/throughput-99","fresh":false}"#;

    #[test]
    fn artifacts() {
        let t = parse_artifact(TEST_ARTIFACT).unwrap();
        assert_eq!(t.name, "dmabuf_sync_file");
        assert!(t.test);
        assert_eq!(
            Want::Tests.select(&t),
            Some(("test dmabuf_sync_file".to_string(), Kind::Test))
        );
        assert_eq!(Want::Examples.select(&t), None);

        let lib = parse_artifact(LIB_ARTIFACT).unwrap();
        assert_eq!(lib.executable, None);
        assert_eq!(Want::Tests.select(&lib), None);

        let ex = parse_artifact(EXAMPLE_ARTIFACT).unwrap();
        assert_eq!(
            Want::Examples.select(&ex),
            Some(("example handoff".to_string(), Kind::Example))
        );
        assert_eq!(Want::Tests.select(&ex), None);
        // The same example built with the test harness (`test = true`).
        let ex_tests = parse_artifact(
            &EXAMPLE_ARTIFACT.replace(r#""profile":{"test":false}"#, r#""profile":{"test":true}"#),
        )
        .unwrap();
        assert_eq!(
            Want::Tests.select(&ex_tests),
            Some(("example handoff (unit tests)".to_string(), Kind::Test))
        );
        assert_eq!(Want::Examples.select(&ex_tests), None);

        let b = parse_artifact(BENCH_ARTIFACT).unwrap();
        assert_eq!(
            Want::Benches.select(&b),
            Some(("bench throughput".to_string(), Kind::Bench))
        );

        assert_eq!(
            parse_artifact(r#"{"reason":"build-finished","success":true}"#),
            None
        );
        assert_eq!(parse_artifact("Compiling foo"), None);
    }

    #[test]
    fn metadata() {
        let json = r#"{"packages":[{"name":"xtask","manifest_path":"/ci/repo/xtask/Cargo.toml"},{"name":"winsys","manifest_path":"/ci/repo/winsys/Cargo.toml"}],"workspace_root":"/ci/repo","target_directory":"/ci/repo/target"}"#;
        let ws = parse_metadata(json).unwrap();
        assert_eq!(ws.root, PathBuf::from("/ci/repo"));
        assert_eq!(ws.target_dir, PathBuf::from("/ci/repo/target"));
        assert_eq!(ws.winsys_dir, PathBuf::from("/ci/repo/winsys"));
    }
}
