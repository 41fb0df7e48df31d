//! The Vulkan layer for the tests: installed by `winsys layer install`,
//! apps started through it (the validation layer above it), and its
//! report read back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::weston::Shot;

pub const LAYER: &str = "VK_LAYER_WINSYS_wsi";

/// The layer installed as an explicit layer in a directory of its own
/// (by `winsys layer install`), and the report file its apps write.
pub struct Layer {
    pub dir: PathBuf,
    pub report: PathBuf,
    /// The sync mode its apps are made to present with
    /// (`WINSYS_LAYER_SYNC`), if any.
    pub sync: Option<&'static str>,
}

impl Layer {
    /// [`Layer::install`], its apps made to present with `sync`
    /// (`WINSYS_LAYER_SYNC`): on weston gl, which composes on the CPU, a
    /// FIFO swapchain takes wl_shm by itself; `explicit` keeps the tests
    /// of explicit sync on it.
    pub fn forcing(sync: &'static str) -> Layer {
        let mut layer = Layer::install();
        layer.sync = Some(sync);
        layer
    }

    pub fn install() -> Layer {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "winsys-layer-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let out = Command::new(super::built("", "winsys"))
            .args(["layer", "install", "--explicit", "--dir"])
            .arg(&dir)
            .output()
            .expect("run winsys layer install");
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "winsys layer install: {said}");
        let manifest = dir.join("VkLayer_winsys.json");
        let text = std::fs::read_to_string(&manifest).expect("the manifest");
        assert!(text.contains(LAYER), "{text}");
        println!("{said}");
        let report = dir.join("report.jsonl");
        Layer {
            dir,
            report,
            sync: None,
        }
    }

    /// The environment that puts an app on the layer, validation above it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("VK_ADD_LAYER_PATH", self.dir.display().to_string()),
            (
                "VK_INSTANCE_LAYERS",
                format!("VK_LAYER_KHRONOS_validation:{LAYER}"),
            ),
            ("WINSYS_LAYER_REPORT", self.report.display().to_string()),
        ]
        .into_iter()
        .chain(self.sync.map(|s| ("WINSYS_LAYER_SYNC", s.to_string())))
        .collect()
    }

    /// The report's lines of process `pid`.
    pub fn events(&self, pid: u32) -> Vec<String> {
        let text = std::fs::read_to_string(&self.report).unwrap_or_default();
        let tag = format!("\"pid\":{pid},");
        text.lines()
            .filter(|l| l.contains(&tag))
            .map(String::from)
            .collect()
    }

    /// The report's `kind` events (`create`, `destroy`, ...) of process
    /// `pid`.
    pub fn events_of(&self, pid: u32, kind: &str) -> Vec<String> {
        let mut events = self.events(pid);
        events.retain(|l| field(l, "event") == Some(kind));
        events
    }
}

impl Drop for Layer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `"key":value` of a flat JSON line, quotes trimmed.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[at..];
    let end = if let Some(s) = rest.strip_prefix('"') {
        return s.split('"').next();
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(&rest[..end])
}

/// Wait for `child` at most `limit` (killed after it): its output.
pub fn finish(mut child: Child, limit: Duration) -> (Output, bool) {
    let t = Instant::now();
    let mut in_time = true;
    while matches!(child.try_wait(), Ok(None)) {
        if t.elapsed() > limit {
            in_time = false;
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (child.wait_with_output().unwrap(), in_time)
}

pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Start `program` on `socket` through the layer.
pub fn spawn(
    layer: &Layer,
    socket: &str,
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Child {
    Command::new(program)
        .args(args)
        .envs(layer.env())
        .envs(env.iter().copied())
        .env("WAYLAND_DISPLAY", socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()))
}

/// Start vkcube on `socket` through the layer: `frames` frames at 256x256
/// (the size of the test compositors' outputs).
pub fn spawn_vkcube(layer: &Layer, socket: &str, frames: u32, env: &[(&str, &str)]) -> Child {
    let frames = frames.to_string();
    let args = [
        "--wsi", "wayland", "--width", "256", "--height", "256", "--c", &frames,
    ];
    spawn(layer, socket, Path::new("vkcube"), &args, env)
}

/// The report's checks of one app run: one swapchain (at least) created
/// and destroyed in `sync` mode, `frames` presented in all.
pub fn assert_reported(layer: &Layer, pid: u32, sync: &str, frames: u64, said: &str) {
    println!("layer report of {pid}:\n{}", layer.events(pid).join("\n"));
    let created = layer.events_of(pid, "create");
    let destroyed = layer.events_of(pid, "destroy");
    assert!(
        !created.is_empty(),
        "no swapchain through the layer:\n{said}"
    );
    assert_eq!(created.len(), destroyed.len(), "every swapchain destroyed");
    for l in &created {
        assert_eq!(field(l, "sync"), Some(sync), "{l}");
    }
    let total: u64 = destroyed
        .iter()
        .map(|l| field(l, "frames").unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, frames, "frames presented through the layer");
}

pub fn assert_no_validation_errors(said: &str) {
    assert!(
        !said.contains("Validation Error"),
        "the validation layer reported errors:\n{said}"
    );
}

/// The cube example's `--wsi mesa` run through the layer; its pid, JSON
/// line and output.
pub fn mesa_cube(layer: &Layer, socket: &str, args: &[&str]) -> (u32, String, String) {
    mesa_cube_env(layer, socket, args, &[])
}

/// Wait for `child` (`what`, in messages) at most 300 s: it must exit 0
/// and the validation layer must have been silent. Its pid, its output
/// and what it said (stdout, then stderr).
pub fn finishes_cleanly(child: Child, what: &str) -> (u32, Output, String) {
    let pid = child.id();
    let (out, in_time) = finish(child, Duration::from_secs(300));
    let said = text(&out);
    println!("{what}:\n{said}");
    assert!(in_time, "{what} did not finish within 300 s");
    assert!(out.status.success(), "{what} failed: {}", out.status);
    assert_no_validation_errors(&said);
    (pid, out, said)
}

/// [`mesa_cube`] with `env` set too.
pub fn mesa_cube_env(
    layer: &Layer,
    socket: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (u32, String, String) {
    let mut all = vec!["--wsi", "mesa", "--json", "--validation", "--timeout", "30"];
    all.extend_from_slice(args);
    let child = spawn(layer, socket, &super::built("examples", "cube"), &all, env);
    let (pid, out, said) = finishes_cleanly(child, &format!("the cube {all:?}"));
    let json = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    (pid, json, said)
}

/// A picture read back: width, height, and the pixel at (x, y).
pub type Picture = (u32, u32, Box<dyn Fn(u32, u32) -> u32>);

/// Distinct colours of a picture.
pub fn colours(width: u32, height: u32, pixel: impl Fn(u32, u32) -> u32) -> usize {
    let mut seen = std::collections::HashSet::new();
    for y in 0..height {
        for x in 0..width {
            seen.insert(pixel(x, y) & 0xff_ffff);
        }
    }
    seen.len()
}

/// vkcube's picture: its textured cube has many colours (a clear-colour
/// frame, or nothing, has one or two).
pub const VKCUBE_COLOURS: usize = 40;

/// vkcube runs (through the layer) until `grab` reads the compositor's
/// output back showing its picture; then it is stopped.
pub fn vkcube_is_shown(
    layer: &Layer,
    socket: &str,
    env: &[(&str, &str)],
    grab: impl Fn() -> Option<Picture>,
) {
    let mut child = spawn_vkcube(layer, socket, 1_000_000, env);
    let shown = super::until_shown(&mut child, Duration::from_secs(120), || {
        let (w, h, pixel) = grab().ok_or("no picture of the output")?;
        match colours(w, h, pixel) {
            n if n >= VKCUBE_COLOURS => Ok(n),
            n => Err(format!("{n} colours")),
        }
    });
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    println!("vkcube until shown:\n{said}");
    assert_no_validation_errors(&said);
    match shown {
        Ok(n) => println!("the compositor shows vkcube's picture ({n} colours)"),
        Err(last) => panic!("the output never showed vkcube's picture (last: {last})"),
    }
}

/// A weston shot as a [`Picture`].
pub fn shot(s: Shot) -> Option<Picture> {
    let (w, h) = (s.width, s.height);
    Some((w, h, Box::new(move |x, y| s.pixel(x, y))))
}
