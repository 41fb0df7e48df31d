//! The JSON files exchanged between the host and the guest runner, both under
//! `target/winsys-vm/`: the plan (host -> guest) and the results (guest -> host).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::kernels::Feature;
use crate::libtest::{Kind, Verdict};

/// What the guest runner is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The workspace root (same path in the guest).
    pub workspace: PathBuf,
    /// Working directory and `CARGO_MANIFEST_DIR` of the binaries (the
    /// winsys crate, as `cargo test` does).
    pub crate_dir: PathBuf,
    /// Where the guest writes [`Results`].
    pub results: PathBuf,
    /// Where the guest writes one log per binary.
    pub log_dir: PathBuf,
    /// Per-binary timeout in seconds.
    pub timeout_s: u64,
    /// Devices that must be present (a missing one is a failure).
    pub require_devices: bool,
    /// What the kernel is declared to lack: its devices are not required,
    /// and one that is present anyway is a failure (a stale declaration).
    #[serde(default)]
    pub lacks: Vec<Feature>,
    /// Extra environment for every binary.
    pub env: Vec<(String, String)>,
    /// The binaries, in order.
    pub binaries: Vec<Binary>,
}

/// One binary to run in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binary {
    /// Unique display name (`test dmabuf_sync_file`, `example handoff`).
    pub name: String,
    /// How its output is judged.
    pub kind: Kind,
    /// The executable.
    pub path: PathBuf,
    /// Arguments (none for tests and examples, `--bench` for benches,
    /// `--exact --skip NAME...` for tests left out on an old kernel).
    pub args: Vec<String>,
    /// The libtest "filtered out" count the skips must give (each declared
    /// test name must exist).
    #[serde(default)]
    pub expect_filtered: Option<u64>,
}

/// A device node the guest found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// `/dev/dri/card0`, `/dev/udmabuf`, `/dev/dma_heap/system`.
    pub node: String,
    /// Driver name (`vgem`, `virtio_gpu`, `udmabuf`, `dma-heap`), or `?`.
    pub driver: String,
    /// Extra detail (sysfs device path, how the driver name was found).
    pub detail: String,
}

/// What the guest runner found and how every binary did. Written after each
/// binary (with `complete: false`) so a killed VM still leaves partial results.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Results {
    /// True once every binary ran.
    pub complete: bool,
    /// Guest kernel release.
    pub kernel: String,
    /// Device nodes found.
    pub devices: Vec<Device>,
    /// Required devices that were missing, and other setup failures.
    pub device_problems: Vec<String>,
    /// One entry per binary run so far.
    pub binaries: Vec<BinaryResult>,
}

/// How one binary did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryResult {
    /// As in the plan.
    pub name: String,
    /// As in the plan.
    pub kind: Kind,
    /// `exit status 0`, `TIMED OUT after ...`, `killed by signal 11`.
    pub end: String,
    /// Seconds it ran.
    pub duration_s: f64,
    /// Its full output.
    pub log: PathBuf,
    /// The judgement.
    pub verdict: Verdict,
}
