//! Compositor-side benchmarks (feature `server`), each against a baseline
//! measured in the same run:
//!
//! - acquire-to-apply latency: from the moment a client's GPU work
//!   signals (a vgem write fence, signaled by another thread) to the moment
//!   the compositor may apply the commit: an [`AcquireGate`] fd polled in
//!   the event loop vs a blocking wait on the main thread (goal: <= 1.1x,
//!   the gate costs nothing in latency);
//! - the event loop's longest stall while one client's fence is 50 ms late,
//!   with a 1 ms timer standing for the other clients' work: the gate
//!   polled beside it vs a blocking wait for the late fence (goal: the gate
//!   stalls < 0.1x as long);
//! - a release into a drm-syncobj release point through
//!   [`ReleaseTracker`] (new, one use, release) vs the raw ioctl sequence
//!   (`FD_TO_HANDLE(IMPORT_SYNC_FILE)` into a reused binary syncobj, then
//!   `TRANSFER` to the point), goal <= 1.05x.
//!
//! Prints a table and writes `target/bench/results.json` (or
//! `$WINSYS_BENCH_OUT`). Run in the VM with `cargo xtask bench server`.

#[path = "common/report.rs"]
mod report;
#[path = "common/timing.rs"]
mod timing;

use std::os::fd::{AsFd, AsRawFd};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use report::{Row, Rows};
use rustix::event::{PollFd, PollFlags};
use timing::pair;
use winsys::alloc::vgem::Vgem;
use winsys::device::{DrmDevice, NodeKind};
use winsys::dmabuf::Access;
use winsys::format::Fourcc;
use winsys::server::acquire::{Acquire, AcquireGate, ReadyWhen};
use winsys::server::release::{ReleaseTo, ReleaseTracker};
use winsys::sync::Syncobj;
use winsys::uapi::drm;

/// A raw ioctl for a baseline, unwrapped.
macro_rules! raw {
    ($ioctl:expr, $fd:expr, $arg:expr) => {
        // SAFETY: the baseline passes handles and fds it created itself.
        unsafe { $ioctl.call_unchecked($fd, $arg) }.unwrap()
    };
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One latency sample: a writer signals after `delay` on another thread;
/// `wait` blocks until the compositor may apply; seconds from the signal
/// to that moment.
fn latency(vgem: &Vgem, delay: Duration, gate: bool) -> f64 {
    let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let writer = buf.attach_fence(Access::Write).unwrap();
    let (tx, rx) = mpsc::channel();
    let signaler = std::thread::spawn(move || {
        std::thread::sleep(delay);
        let t = Instant::now();
        writer.signal().unwrap();
        tx.send(t).unwrap();
    });
    let done = if gate {
        let mut g = AcquireGate::new(buf.dmabuf(), Acquire::Implicit, ReadyWhen::Signaled).unwrap();
        loop {
            let fd = g.fd();
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            rustix::event::poll(&mut fds, None).unwrap();
            if g.is_ready().unwrap() {
                break Instant::now();
            }
        }
    } else {
        let fence = buf.dmabuf().implicit_fence(Access::Read).unwrap();
        fence.wait(None).unwrap();
        Instant::now()
    };
    signaler.join().unwrap();
    let signaled = rx.recv().unwrap();
    done.saturating_duration_since(signaled).as_secs_f64()
}

fn acquire_latency(rows: &mut Rows, vgem: &Vgem) {
    let mut gate = Vec::new();
    let mut blocking = Vec::new();
    for round in 0..60 {
        let d = Duration::from_millis(2);
        if round % 2 == 0 {
            gate.push(latency(vgem, d, true));
            blocking.push(latency(vgem, d, false));
        } else {
            blocking.push(latency(vgem, d, false));
            gate.push(latency(vgem, d, true));
        }
    }
    let (g, b) = (median(gate), median(blocking));
    rows.push(Row {
        spread: None,
        name: "acquire-to-apply latency, gate in the event loop".into(),
        value: g * 1e6,
        unit: "us",
        baseline: "blocking wait on the main thread".into(),
        baseline_value: b * 1e6,
        ratio: g / b,
        goal: "<= 1.1x",
    });
}

/// The longest gap between handled ticks of a 1 ms timer while one
/// client's fence signals `late` after the commit arrives.
fn longest_stall(vgem: &Vgem, late: Duration, gate: bool) -> Duration {
    let timer = rustix::time::timerfd_create(
        rustix::time::TimerfdClockId::Monotonic,
        rustix::time::TimerfdFlags::NONBLOCK | rustix::time::TimerfdFlags::CLOEXEC,
    )
    .unwrap();
    let ms = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    rustix::time::timerfd_settime(
        &timer,
        rustix::time::TimerfdTimerFlags::empty(),
        &rustix::time::Itimerspec {
            it_interval: ms,
            it_value: ms,
        },
    )
    .unwrap();
    let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let writer = buf.attach_fence(Access::Write).unwrap();
    let signaler = std::thread::spawn(move || {
        std::thread::sleep(late);
        writer.signal().unwrap();
    });
    let start = Instant::now();
    let mut last_tick = Instant::now();
    let mut stall = Duration::ZERO;
    let mut applied = false;
    let mut g = gate
        .then(|| AcquireGate::new(buf.dmabuf(), Acquire::Implicit, ReadyWhen::Signaled).unwrap());
    // Run until the commit applied and 20 ms more.
    while !applied || start.elapsed() < late + Duration::from_millis(20) {
        if !applied && !gate {
            // The blocking compositor: the commit came, it waits for it.
            buf.dmabuf()
                .implicit_fence(Access::Read)
                .unwrap()
                .wait(None)
                .unwrap();
            applied = true;
        }
        let gate_fd = g.as_ref().filter(|_| !applied).map(|g| g.fd());
        let mut fds = vec![PollFd::new(&timer, PollFlags::IN)];
        if let Some(fd) = &gate_fd {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        rustix::event::poll(&mut fds, None).unwrap();
        let ticked = !fds[0].revents().is_empty();
        drop(fds);
        if ticked {
            let mut n = [0u8; 8];
            let _ = rustix::io::read(&timer, &mut n);
            stall = stall.max(last_tick.elapsed());
            last_tick = Instant::now();
        }
        if let Some(g) = g.as_mut() {
            if !applied && g.is_ready().unwrap() {
                applied = true;
            }
        }
    }
    signaler.join().unwrap();
    stall
}

fn event_loop_stall(rows: &mut Rows, vgem: &Vgem) {
    let late = Duration::from_millis(50);
    let mut gate = Vec::new();
    let mut blocking = Vec::new();
    for _ in 0..9 {
        gate.push(longest_stall(vgem, late, true).as_secs_f64());
        blocking.push(longest_stall(vgem, late, false).as_secs_f64());
    }
    let (g, b) = (median(gate), median(blocking));
    rows.push(Row {
        spread: None,
        name: "event loop's longest stall, fence 50 ms late, gate".into(),
        value: g * 1e3,
        unit: "ms",
        baseline: "blocking wait for the fence".into(),
        baseline_value: b * 1e3,
        ratio: g / b,
        goal: "< 0.1x",
    });
}

fn release_path(rows: &mut Rows, vgem: &Vgem) {
    let dev =
        Arc::new(DrmDevice::find("virtio_gpu", NodeKind::Render).expect("virtio_gpu render node"));
    // A pending use: the compositor's render-done fence.
    let src = vgem.create(16, 16, Fourcc::XRGB8888).unwrap();
    let _busy = src.attach_fence(Access::Write).unwrap();
    let fence = src.dmabuf().export_sync_file(Access::Read).unwrap();
    let api_tl = Arc::new(Syncobj::new(&dev).unwrap());
    let raw_tl = Syncobj::new(&dev).unwrap();
    let (mut api_point, mut raw_point) = (0u64, 0u64);
    let dfd = dev.as_fd();
    let raw = raw_tl.handle().raw();
    let mut create = drm::drm_syncobj_create::default();
    raw!(drm::DRM_IOCTL_SYNCOBJ_CREATE, dfd, &mut create);
    let tmp = create.handle;
    let (api_s, raw_s) = pair(
        15,
        400,
        || {
            api_point += 1;
            let mut tracker = ReleaseTracker::new(ReleaseTo::Timeline {
                timeline: api_tl.clone(),
                point: api_point,
            });
            tracker.add_use(fence.try_clone().unwrap()).unwrap();
            tracker.release().unwrap();
        },
        || {
            raw_point += 1;
            // A fresh sync_file per use, as the compositor's GPU gives.
            let use_fd = fence.as_fd().try_clone_to_owned().unwrap();
            let mut import = drm::drm_syncobj_handle {
                handle: tmp,
                flags: drm::DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE,
                fd: use_fd.as_raw_fd(),
                pad: 0,
            };
            raw!(drm::DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE, dfd, &mut import);
            let mut xfer = drm::drm_syncobj_transfer {
                src_handle: tmp,
                dst_handle: raw,
                dst_point: raw_point,
                ..Default::default()
            };
            raw!(drm::DRM_IOCTL_SYNCOBJ_TRANSFER, dfd, &mut xfer);
        },
    );
    let mut destroy = drm::drm_syncobj_destroy {
        handle: tmp,
        pad: 0,
    };
    raw!(drm::DRM_IOCTL_SYNCOBJ_DESTROY, dfd, &mut destroy);
    rows.push(Row {
        spread: None,
        name: "release into a drm-syncobj point, ReleaseTracker".into(),
        value: api_s * 1e6,
        unit: "us",
        baseline: "raw FD_TO_HANDLE + TRANSFER".into(),
        baseline_value: raw_s * 1e6,
        ratio: api_s / raw_s,
        goal: "<= 1.05x",
    });
}

fn main() {
    let vgem = Vgem::open().expect("vgem (run in the VM: cargo xtask bench server)");
    let mut rows = Rows::default();
    eprintln!("server bench: acquire-to-apply latency (60 rounds)");
    acquire_latency(&mut rows, &vgem);
    eprintln!("server bench: event loop stall with a late fence (9 rounds)");
    event_loop_stall(&mut rows, &vgem);
    eprintln!("server bench: release path");
    release_path(&mut rows, &vgem);
    report::print_table(&rows);
    println!("rows in {}", report::out_path().display());
}
