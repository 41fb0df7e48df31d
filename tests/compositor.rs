//! `examples/compositor`, the reference compositor over `winsys::server`,
//! with clients no one here wrote (weston's demo clients, vkcube through
//! Mesa's WSI) and the winsys cube in every sync mode: frames presented,
//! the output PNG showing their content, a late fence holding only its own
//! client, every protocol error posted, every release delivered.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::compositor::{Compositor, Png};
use common::{controllable_fence, need, LONG};
use winsys::alloc::vgem::{Vgem, VgemBuffer};
use winsys::device::{DrmDevice, NodeKind};
use winsys::dmabuf::Access;
use winsys::format::Fourcc;
use winsys::sync::{Syncobj, WaitFor};
use winsys::wayland::surface::{BufferId, Surface, TimelineId};
use winsys::wayland::sync::SyncMode;

/// The compositor's background (examples/compositor/gpu.rs).
const BACKGROUND: u32 = 0x203040;

fn spawn(socket: &str, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Child {
    Command::new(program)
        .args(args)
        .env("WAYLAND_DISPLAY", socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client")
}

/// Share of the output's pixels in `x0..x1` that are not the background.
fn covered(png: &Png, x0: u32, x1: u32) -> f64 {
    let mut n = 0;
    for y in 0..png.height {
        for x in x0..x1.min(png.width) {
            n += (png.pixel(x, y) != BACKGROUND) as u32;
        }
    }
    n as f64 / ((x1.min(png.width) - x0) * png.height) as f64
}

/// Distinct colours in the output.
fn colours(png: &Png) -> usize {
    let mut all: Vec<u32> = (0..png.height)
        .flat_map(|y| (0..png.width).map(move |x| (x, y)))
        .map(|(x, y)| png.pixel(x, y))
        .collect();
    all.sort_unstable();
    all.dedup();
    all.len()
}

/// Wait until the output satisfies `ok`; the last reason otherwise.
fn wait_output(c: &Compositor, timeout: Duration, ok: impl Fn(&Png) -> Result<(), String>) {
    let t = Instant::now();
    let mut last = "no PNG yet".to_string();
    while t.elapsed() < timeout {
        if let Some(png) = c.output() {
            match ok(&png) {
                Ok(()) => return,
                Err(why) => last = why,
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the output never showed it: {last}\n{}", c.log_text());
}

/// Run a foreign client until the compositor applied `commits` more
/// commits and its output shows it; then stop it and see its surface go.
fn foreign_client(
    c: &mut Compositor,
    what: &str,
    program: &str,
    args: &[&str],
    commits: u64,
    min_colours: usize,
) {
    let before = c.stats().unwrap_or_default();
    let mut child = spawn(&c.socket, program, args);
    let s = c
        .wait_stats(Duration::from_secs(60), |s| {
            s.applied >= before.applied + commits
        })
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    println!("{what}: {s:?}");
    wait_output(c, Duration::from_secs(30), |png| {
        let cover = covered(png, 0, png.width);
        let n = colours(png);
        if cover > 0.5 && n >= min_colours {
            Ok(())
        } else {
            Err(format!(
                "{what}: {:.0}% covered, {n} colours",
                cover * 100.0
            ))
        }
    });
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    println!("{what} said:\n{}", String::from_utf8_lossy(&out.stderr));
    c.wait_stats(LONG * 4, |s| s.surfaces == 0)
        .unwrap_or_else(|e| panic!("{what} left a surface: {e}"));
    assert!(c.alive());
}

/// vgem's card node: weston-simple-dmabuf-egl allocates there (the render
/// nodes fail on this bed).
fn vgem_card() -> Option<String> {
    DrmDevice::list()
        .into_iter()
        .find(|n| n.driver == "vgem" && n.kind == NodeKind::Primary)
        .map(|n| n.path.display().to_string())
}

#[test]
fn foreign_clients_present_through_shm_and_dmabuf() {
    let _one = common::one_at_a_time();
    let mut c = need!(Compositor::start(&[]), "the reference compositor");
    foreign_client(
        &mut c,
        "weston-simple-shm",
        "weston-simple-shm",
        &[],
        20,
        16,
    );
    foreign_client(
        &mut c,
        "vkcube (Mesa WSI)",
        "vkcube",
        &["--wsi", "wayland"],
        20,
        16,
    );
    let card = vgem_card().expect("vgem card node");
    let releases = c.stats().unwrap_or_default().releases;
    foreign_client(
        &mut c,
        "weston-simple-dmabuf-egl",
        "weston-simple-dmabuf-egl",
        &["--drm-render-node", &card],
        20,
        2,
    );
    let s = c.stats().unwrap();
    assert!(s.releases >= releases + 19, "dma-buf releases: {s:?}");
    assert_eq!(s.protocol_errors, 0, "{}", c.log_text());
}

/// drm-syncobj the way a GPU presents: a commit whose acquire point
/// carries rendering not yet done (a vgem fence imported into the point,
/// `Surface::present_with_points`) is held until the point signals; a
/// commit whose content is complete names the done timeline's signalled
/// point (`Surface::present_complete`) and is applied without one; the
/// release points signal, so every buffer comes back.
/// A drm-syncobj surface on `c` with `n` vgem buffers, a timeline for
/// each and the done timeline; `None` (the test skips) without vgem or
/// virtio_gpu's timelines.
struct SyncobjSurface {
    surface: Surface,
    ids: Vec<BufferId>,
    timelines: Vec<TimelineId>,
    done: TimelineId,
    _bufs: Vec<VgemBuffer>,
    vgem: Vgem,
    _conn: wayland_client::Connection,
}

impl SyncobjSurface {
    fn new(c: &Compositor, title: &str, n: usize) -> Option<Self> {
        let vgem = common::required("vgem", Vgem::open())?;
        let dev = std::sync::Arc::new(common::required(
            "virtio_gpu's render node (timeline syncobjs)",
            DrmDevice::find("virtio_gpu", NodeKind::Render),
        )?);
        let conn = winsys::wayland::connect(Some(&c.socket)).unwrap();
        let mut surface = Surface::new(&conn, title, SyncMode::DrmSyncobj, LONG).unwrap();
        let bufs: Vec<_> = (0..n)
            .map(|_| vgem.create(64, 64, Fourcc::XRGB8888).unwrap())
            .collect();
        let ids = bufs
            .iter()
            .map(|b| surface.add_dmabuf(b.dmabuf()).unwrap())
            .collect();
        let timelines = (0..n)
            .map(|_| surface.add_timeline(Syncobj::new(&dev).unwrap()).unwrap())
            .collect();
        let done = surface
            .add_done_timeline(Syncobj::new(&dev).unwrap())
            .unwrap();
        Some(SyncobjSurface {
            surface,
            ids,
            timelines,
            done,
            _bufs: bufs,
            vgem,
            _conn: conn,
        })
    }
}

#[test]
fn syncobj_commits_wait_for_a_pending_acquire_point_and_complete_ones_do_not() {
    let _one = common::one_at_a_time();
    let c = need!(Compositor::start(&[]), "the reference compositor");
    let Some(s) = SyncobjSurface::new(&c, "syncobj", 2) else {
        return;
    };
    let (mut surface, ids, timelines, done) = (s.surface, s.ids, s.timelines, s.done);
    let vgem = &s.vgem;
    let mut point = [0u64; 2];
    for frame in 0..6usize {
        let k = frame % 2;
        if frame >= 2 {
            surface.wait_release(ids[k]).unwrap();
        }
        let before = c.stats().unwrap_or_default();
        if frame % 2 == 0 {
            let (_gate, gpu, fence) = controllable_fence(vgem);
            let (a, r) = (point[k] + 1, point[k] + 2);
            point[k] = r;
            surface
                .timeline(timelines[k])
                .unwrap()
                .import_sync_file(a, &fence)
                .unwrap();
            surface
                .present_with_points(ids[k], timelines[k], a, r)
                .unwrap();
            // Held while the point is pending (the compositor counts it).
            let held = c
                .wait_stats(LONG * 2, |s| s.held == 1)
                .unwrap_or_else(|e| panic!("frame {frame} not held: {e}\n{}", c.log_text()));
            gpu.signal().unwrap();
            c.wait_stats(LONG * 2, |s| s.applied > held.applied && s.held == 0)
                .unwrap_or_else(|e| panic!("frame {frame} not applied: {e}\n{}", c.log_text()));
        } else {
            point[k] += 1;
            surface
                .present_complete(ids[k], timelines[k], point[k])
                .unwrap();
            c.wait_stats(LONG * 2, |s| s.applied > before.applied && s.held == 0)
                .unwrap_or_else(|e| panic!("frame {frame} not applied: {e}\n{}", c.log_text()));
        }
    }
    // Misuse is a typed error, not a protocol error.
    assert!(matches!(
        surface.present_complete(ids[0], done, 9),
        Err(winsys::wayland::Error::Wayland(_))
    ));
    assert!(matches!(
        surface.present_with_points(ids[0], done, 5, 6),
        Err(winsys::wayland::Error::Wayland(_))
    ));
    let s = c.stats().unwrap();
    assert_eq!(s.protocol_errors, 0, "{}", c.log_text());
    println!("syncobj commits: {s:?}");
}

/// The CPU time this thread used so far.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[test]
fn release_points_are_waited_for_on_one_eventfd_that_a_stale_wake_does_not_fool() {
    let _one = common::one_at_a_time();
    let c = need!(Compositor::start(&[]), "the reference compositor");
    let Some(s) = SyncobjSurface::new(&c, "one eventfd", 3) else {
        return;
    };
    let (mut surface, ids, timelines) = (s.surface, s.ids, s.timelines);
    let mut point = [0u64; 3];
    let mut present = |surface: &mut Surface, k: usize| {
        point[k] += 1;
        let before = c.stats().unwrap_or_default();
        surface
            .present_complete(ids[k], timelines[k], point[k])
            .unwrap();
        c.wait_stats(LONG * 2, |s| s.applied > before.applied)
            .unwrap_or_else(|e| panic!("buffer {k} not applied: {e}\n{}", c.log_text()));
        point[k]
    };
    let timeout = |r: Result<_, winsys::wayland::Error>| {
        matches!(r, Err(winsys::wayland::Error::Timeout { .. }))
    };

    // A on screen: its release point is told to the eventfd, and the
    // wait runs out.
    let a = present(&mut surface, 0);
    assert!(timeout(
        surface.take_any_release_within(&ids[..1], Duration::from_millis(50))
    ));
    // B replaces it: A's point is reached, and the eventfd fires while
    // nothing waits.
    present(&mut surface, 1);
    // Bounded only so that a compositor that never releases A fails the
    // test instead of hanging it.
    surface
        .timeline(timelines[0])
        .unwrap()
        .wait(a, WaitFor::SubmittedThenSignaled, Some(LONG * 4))
        .unwrap_or_else(|e| panic!("A's release point never reached: {e}"));
    std::thread::sleep(Duration::from_millis(20));
    // A wait for B (on screen, so never released) wakes at once on the
    // stale count, asks the timelines again, drains the eventfd and
    // waits out its time without spinning and without answering A.
    let (wall, cpu) = (Instant::now(), thread_cpu());
    let wait = Duration::from_millis(600);
    assert!(timeout(surface.take_any_release_within(&ids[1..2], wait)));
    let (wall, cpu) = (wall.elapsed(), thread_cpu() - cpu);
    assert!(wall >= wait, "the wait ended early: {wall:?}");
    assert!(
        cpu * 3 < wall,
        "the wait spun: {cpu:?} of CPU in {wall:?} (the eventfd not drained)"
    );
    // Both asked for: A, whose point was reached.
    let (got, fence) = surface.take_any_release_within(&ids[..2], LONG).unwrap();
    assert_eq!((got, fence.is_none()), (ids[0], true));

    // Frames through three buffers, each taken back as the compositor
    // lets go of it: all come back, and the one eventfd is all there is.
    let fds = common::open_fds();
    let mut queued = vec![ids[1]];
    let mut free = vec![ids[0], ids[2]];
    for _ in 0..24 {
        let id = free.remove(0);
        let k = ids.iter().position(|&i| i == id).unwrap();
        present(&mut surface, k);
        queued.push(id);
        // The newest is on screen; the others come back.
        if queued.len() == 3 {
            let (got, fence) = surface.take_any_release_within(&queued[..2], LONG).unwrap();
            assert!(fence.is_none());
            queued.retain(|&q| q != got);
            free.push(got);
        }
    }
    assert_eq!(common::open_fds(), fds, "fds leaked by the release waits");
    let s = c.stats().unwrap();
    assert_eq!(s.protocol_errors, 0, "{}", c.log_text());
}

/// Run the cube for `frames` frames; the `presented` figure it printed.
fn cube(c: &Compositor, frames: u32, args: &[&str], env: &[(&str, &str)]) -> String {
    let n = frames.to_string();
    // Every wait bounded generously: a compositor on an emulated CPU
    // (the suite must pass with the VM given one) answers in seconds.
    let mut all = vec!["--frames", &n, "--json", "--validation", "--timeout", "30"];
    all.extend_from_slice(args);
    let out = Command::new(common::built("examples", "cube"))
        .args(&all)
        .env("WAYLAND_DISPLAY", &c.socket)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!("cube {all:?}:\n{stdout}");
    assert!(
        out.status.success(),
        "the cube failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.log_text()
    );
    let json = stdout.lines().last().expect("figures").to_string();
    let presented = json
        .split("\"presented\":")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .expect("presented");
    assert_eq!(presented, n, "every frame presented: {json}");
    json
}

/// Run the cube until the output shows a cube frame.
fn cube_is_shown(c: &Compositor, args: &[&str], env: &[(&str, &str)]) {
    let mut all = vec!["--frames", "100000", "--timeout", "30"];
    all.extend_from_slice(args);
    let mut child = Command::new(common::built("examples", "cube"))
        .args(&all)
        .env("WAYLAND_DISPLAY", &c.socket)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_output(c, Duration::from_secs(60), |png| {
        common::cube_frame(png.width, png.height, |x, y| png.pixel(x, y)).map(|faces| {
            println!("the output shows a cube frame: face pixels {faces:?}");
        })
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_cube_presents_in_every_sync_mode() {
    let _one = common::one_at_a_time();
    let c = need!(Compositor::start(&[]), "the reference compositor");
    // By default the best mode on offer: drm-syncobj (virtio_gpu timelines).
    let json = cube(&c, 30, &[], &[]);
    assert!(json.contains("\"sync\":\"syncobj\""), "{json}");
    for mode in ["explicit", "implicit", "shm"] {
        let json = cube(&c, 30, &["--sync", mode], &[]);
        assert!(json.contains(&format!("\"sync\":\"{mode}\"")), "{json}");
    }
    cube_is_shown(&c, &[], &[]);
    cube_is_shown(&c, &["--sync", "shm"], &[]);
    let s = c.stats().unwrap();
    assert_eq!(s.protocol_errors, 0, "{}", c.log_text());
}

#[test]
fn implicit_clients_composite_without_the_sync_file_ioctls() {
    let _one = common::one_at_a_time();
    // As on a kernel before 6.0: gates poll the dma-bufs, releases wait.
    let old = [(winsys::sync::probe::DISABLE_DMABUF_SYNC_FILE_ENV, "1")];
    let c = need!(Compositor::start(&old), "the reference compositor");
    cube(&c, 30, &["--sync", "implicit"], &old);
    cube_is_shown(&c, &["--sync", "implicit"], &old);
}

/// The cube as a background client presenting until it is killed.
fn cube_in_background(c: &Compositor, args: &[&str]) -> Child {
    let mut all = vec!["--frames", "100000000", "--timeout", "60"];
    all.extend_from_slice(args);
    Command::new(common::built("examples", "cube"))
        .args(&all)
        .env("WAYLAND_DISPLAY", &c.socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_late_fence_holds_only_its_own_client_and_its_release_comes_on_disconnect() {
    let _one = common::one_at_a_time();
    let c = need!(Compositor::start(&[]), "the reference compositor");
    let vgem = need!(Vgem::open(), "vgem");
    // Warm up: one cube run, so that the fd count below is steady.
    cube(&c, 10, &["--sync", "explicit"], &[]);
    c.wait_stats(LONG, |s| s.surfaces == 0).unwrap();
    let fds_before = c.settled_fds();

    // Another client presents all along, every frame, for as long as the
    // test needs (however slow the machine): it is presenting before the
    // late commit comes.
    let mut other = cube_in_background(&c, &["--sync", "explicit"]);
    let applied = c.stats().unwrap_or_default().applied;
    c.wait_stats(LONG * 24, |s| s.applied >= applied + 3)
        .expect("the other client presents");

    // The late client: a commit whose acquire fence is a GPU job that does
    // not end. vgem's fences give up after 10 s, so the check is made
    // within the fence's measured life: the other client's commits are
    // counted only while a second handle on the same fence still reads
    // pending. Were the machine so slow that the fence expired first, the
    // late client commits again with a fresh fence (re-armed).
    let conn = winsys::wayland::connect(Some(&c.socket)).unwrap();
    let mut late = Surface::new(&conn, "late", SyncMode::ExplicitSync, LONG).unwrap();
    let mut gates = Vec::new();
    let mut proven = None;
    for attempt in 1..=5 {
        let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
        let id = late.add_dmabuf(buf.dmabuf()).unwrap();
        let (gate_buf, never, fence) = controllable_fence(&vgem);
        let watch = gate_buf.dmabuf().export_sync_file(Access::Read).unwrap();
        late.present(id, Some(fence)).unwrap();
        let held = c
            .wait_stats(LONG * 2, |s| s.held == 1)
            .expect("the late commit is held");
        // The other client's next commits, while the late one waits.
        let s = c.wait_stats(LONG * 2, |s| s.applied >= held.applied + 3);
        let pending = !watch.is_signaled().unwrap();
        let s = s.unwrap_or_else(|e| panic!("the other client stalled: {e}"));
        gates.push((buf, gate_buf, never));
        if pending && s.held == 1 {
            println!(
                "attempt {attempt}: {} commits of the other client while held: {s:?}",
                s.applied - held.applied
            );
            proven = Some(s);
            break;
        }
        println!(
            "attempt {attempt}: the late fence expired before the check (slow machine): {s:?}"
        );
    }
    let s = proven.expect("the late fence expired before every check (5 attempts)");
    println!(
        "event loop's longest stall with a late client: {:.1} ms",
        s.longest_stall_ms
    );
    // A compositor that waited for the fence would stall until it expires
    // (10 s): a stall is measured by the loop itself, not by the
    // machine's speed at composing.
    assert!(s.longest_stall_ms < 5000.0, "the loop blocked: {s:?}");

    let _ = other.kill();
    let _ = other.wait();
    c.wait_stats(LONG * 4, |s| s.surfaces == 1)
        .expect("the other client's surface goes");
    // The late client goes with its commit pending: its release is
    // delivered, nothing of it stays behind.
    let releases = c.stats().unwrap().releases;
    drop(late);
    drop(conn);
    let s = c
        .wait_stats(LONG * 4, |s| s.surfaces == 0 && s.held == 0)
        .unwrap();
    assert!(
        s.releases > releases,
        "no release for the held commit: {s:?}"
    );
    let after = c.fds_down_to(fds_before, LONG * 4);
    assert!(
        after <= fds_before,
        "fds left in the compositor: {after} > {fds_before}"
    );
    for (_, _, never) in gates {
        let _ = never.signal();
    }
}

/// Raw protocol clients that break the rules.
mod bad {
    use std::os::fd::{AsFd, OwnedFd};
    use std::sync::Arc;

    use wayland_client::globals::{registry_queue_init, GlobalList, GlobalListContents};
    use wayland_client::protocol::{
        wl_buffer, wl_compositor, wl_registry, wl_shm, wl_shm_pool, wl_surface,
    };
    use wayland_client::{delegate_noop, Connection, Dispatch, QueueHandle};
    use wayland_protocols::wp::linux_dmabuf::zv1::client::{
        zwp_linux_buffer_params_v1 as params, zwp_linux_dmabuf_v1 as dmabuf,
    };
    use wayland_protocols::wp::linux_drm_syncobj::v1::client::{
        wp_linux_drm_syncobj_manager_v1 as manager,
        wp_linux_drm_syncobj_surface_v1 as sync_surface,
        wp_linux_drm_syncobj_timeline_v1 as timeline,
    };
    use winsys::device::{DrmDevice, NodeKind};
    use winsys::format::Fourcc;
    use winsys::sync::Syncobj;

    pub struct S;

    impl Dispatch<wl_registry::WlRegistry, GlobalListContents> for S {
        fn event(
            _: &mut Self,
            _: &wl_registry::WlRegistry,
            _: wl_registry::Event,
            _: &GlobalListContents,
            _: &Connection,
            _: &QueueHandle<Self>,
        ) {
        }
    }
    delegate_noop!(S: ignore dmabuf::ZwpLinuxDmabufV1);
    delegate_noop!(S: ignore params::ZwpLinuxBufferParamsV1);
    delegate_noop!(S: ignore wl_buffer::WlBuffer);
    delegate_noop!(S: wl_compositor::WlCompositor);
    delegate_noop!(S: ignore wl_surface::WlSurface);
    delegate_noop!(S: ignore wl_shm::WlShm);
    delegate_noop!(S: wl_shm_pool::WlShmPool);
    delegate_noop!(S: manager::WpLinuxDrmSyncobjManagerV1);
    delegate_noop!(S: sync_surface::WpLinuxDrmSyncobjSurfaceV1);
    delegate_noop!(S: timeline::WpLinuxDrmSyncobjTimelineV1);

    /// What a misbehaving client has: its globals, queue, a vgem.
    pub struct Ctx<'a> {
        pub g: &'a GlobalList,
        pub qh: &'a QueueHandle<S>,
        pub vgem: &'a super::Vgem,
    }

    /// What a misbehaving client does.
    pub type Misdeed = fn(&Ctx<'_>);

    /// Connect, misbehave, roundtrip: the protocol error the compositor
    /// posted, as (interface, code).
    pub fn error_for(socket: &str, vgem: &super::Vgem, misdeed: Misdeed) -> (String, u32) {
        let conn = winsys::wayland::connect(Some(socket)).unwrap();
        let (globals, mut queue) = registry_queue_init::<S>(&conn).unwrap();
        misdeed(&Ctx {
            g: &globals,
            qh: &queue.handle(),
            vgem,
        });
        let r = queue.roundtrip(&mut S);
        assert!(r.is_err(), "no protocol error");
        let e = conn.protocol_error().expect("a protocol error");
        (e.object_interface, e.code)
    }

    fn params(c: &Ctx<'_>) -> params::ZwpLinuxBufferParamsV1 {
        let d: dmabuf::ZwpLinuxDmabufV1 = c.g.bind(c.qh, 4..=5, ()).unwrap();
        d.create_params(c.qh, ())
    }

    /// A 64x64 XRGB8888 vgem dma-buf (stride 256, 16 KiB).
    fn fd(c: &Ctx<'_>) -> OwnedFd {
        let b = c.vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
        b.dmabuf().planes()[0].fd().try_clone_to_owned().unwrap()
    }

    fn immed(
        p: &params::ZwpLinuxBufferParamsV1,
        c: &Ctx<'_>,
        w: i32,
        format: Fourcc,
    ) -> wl_buffer::WlBuffer {
        p.create_immed(w, 64, format.0, params::Flags::empty(), c.qh, ())
    }

    fn good_buffer(c: &Ctx<'_>) -> wl_buffer::WlBuffer {
        let p = params(c);
        p.add(fd(c).as_fd(), 0, 0, 256, 0, 0);
        immed(&p, c, 64, Fourcc::XRGB8888)
    }

    pub fn already_used(c: &Ctx<'_>) {
        let p = params(c);
        p.add(fd(c).as_fd(), 0, 0, 256, 0, 0);
        immed(&p, c, 64, Fourcc::XRGB8888);
        immed(&p, c, 64, Fourcc::XRGB8888);
    }
    pub fn plane_idx(c: &Ctx<'_>) {
        params(c).add(fd(c).as_fd(), 5, 0, 256, 0, 0);
    }
    pub fn plane_set(c: &Ctx<'_>) {
        let p = params(c);
        p.add(fd(c).as_fd(), 0, 0, 256, 0, 0);
        p.add(fd(c).as_fd(), 0, 0, 256, 0, 0);
    }
    pub fn incomplete(c: &Ctx<'_>) {
        let p = params(c);
        p.add(fd(c).as_fd(), 0, 0, 64, 0, 0);
        immed(&p, c, 64, Fourcc::NV12);
    }
    pub fn invalid_format(c: &Ctx<'_>) {
        let p = params(c);
        p.add(fd(c).as_fd(), 0, 0, 256, 0, 0);
        immed(&p, c, 64, Fourcc::ABGR16161616F);
    }
    pub fn invalid_dimensions(c: &Ctx<'_>) {
        let p = params(c);
        p.add(fd(c).as_fd(), 0, 0, 256, 0, 0);
        immed(&p, c, 0, Fourcc::XRGB8888);
    }
    pub fn out_of_bounds(c: &Ctx<'_>) {
        let p = params(c);
        p.add(fd(c).as_fd(), 0, 256, 256, 0, 0);
        immed(&p, c, 64, Fourcc::XRGB8888);
    }
    pub fn invalid_wl_buffer(c: &Ctx<'_>) {
        let memfd =
            rustix::fs::memfd_create("not-a-dmabuf", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&memfd, 1 << 16).unwrap();
        let p = params(c);
        p.add(memfd.as_fd(), 0, 0, 256, 0, 0);
        immed(&p, c, 64, Fourcc::XRGB8888);
    }

    fn timeline_fd() -> OwnedFd {
        let dev = Arc::new(DrmDevice::find("virtio_gpu", NodeKind::Render).unwrap());
        Syncobj::new(&dev).unwrap().export().unwrap()
    }

    /// A surface with a syncobj surface, its timeline and a dma-buf buffer.
    fn synced(
        c: &Ctx<'_>,
    ) -> (
        wl_surface::WlSurface,
        sync_surface::WpLinuxDrmSyncobjSurfaceV1,
        timeline::WpLinuxDrmSyncobjTimelineV1,
        wl_buffer::WlBuffer,
    ) {
        let buffer = good_buffer(c);
        let comp: wl_compositor::WlCompositor = c.g.bind(c.qh, 4..=6, ()).unwrap();
        let surface = comp.create_surface(c.qh, ());
        let m: manager::WpLinuxDrmSyncobjManagerV1 = c.g.bind(c.qh, 1..=1, ()).unwrap();
        let sync = m.get_surface(&surface, c.qh, ());
        let tl = m.import_timeline(timeline_fd().as_fd(), c.qh, ());
        (surface, sync, tl, buffer)
    }

    pub fn no_acquire_point(c: &Ctx<'_>) {
        let (surface, sync, tl, buffer) = synced(c);
        sync.set_release_point(&tl, 0, 2);
        surface.attach(Some(&buffer), 0, 0);
        surface.commit();
    }
    pub fn no_release_point(c: &Ctx<'_>) {
        let (surface, sync, tl, buffer) = synced(c);
        sync.set_acquire_point(&tl, 0, 1);
        surface.attach(Some(&buffer), 0, 0);
        surface.commit();
    }
    pub fn no_buffer(c: &Ctx<'_>) {
        let (surface, sync, tl, _) = synced(c);
        sync.set_acquire_point(&tl, 0, 1);
        sync.set_release_point(&tl, 0, 2);
        surface.commit();
    }
    pub fn conflicting_points(c: &Ctx<'_>) {
        let (surface, sync, tl, buffer) = synced(c);
        sync.set_acquire_point(&tl, 0, 2);
        sync.set_release_point(&tl, 0, 2);
        surface.attach(Some(&buffer), 0, 0);
        surface.commit();
    }
    pub fn unsupported_buffer(c: &Ctx<'_>) {
        let (surface, sync, tl, _) = synced(c);
        let shm: wl_shm::WlShm = c.g.bind(c.qh, 1..=1, ()).unwrap();
        let memfd = rustix::fs::memfd_create("shm", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&memfd, 64 * 64 * 4).unwrap();
        let pool = shm.create_pool(memfd.as_fd(), 64 * 64 * 4, c.qh, ());
        let buffer = pool.create_buffer(0, 64, 64, 256, wl_shm::Format::Xrgb8888, c.qh, ());
        sync.set_acquire_point(&tl, 0, 1);
        sync.set_release_point(&tl, 0, 2);
        surface.attach(Some(&buffer), 0, 0);
        surface.commit();
    }
    pub fn surface_exists(c: &Ctx<'_>) {
        let (surface, _sync, _, _) = synced(c);
        let m: manager::WpLinuxDrmSyncobjManagerV1 = c.g.bind(c.qh, 1..=1, ()).unwrap();
        m.get_surface(&surface, c.qh, ());
    }
    pub fn invalid_timeline(c: &Ctx<'_>) {
        let m: manager::WpLinuxDrmSyncobjManagerV1 = c.g.bind(c.qh, 1..=1, ()).unwrap();
        let memfd =
            rustix::fs::memfd_create("not-a-syncobj", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        m.import_timeline(memfd.as_fd(), c.qh, ());
    }

    /// Random `add` / `create` sequences (a small xorshift generator, so a
    /// failing seed can be replayed): each connection must end in a
    /// created buffer, a `failed` event or a protocol error, never in a
    /// crash.
    pub fn garbage(socket: &str, vgem: &super::Vgem, seed: u64) {
        let mut x = seed | 1;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let conn = winsys::wayland::connect(Some(socket)).unwrap();
        let (globals, mut queue) = registry_queue_init::<S>(&conn).unwrap();
        let c = Ctx {
            g: &globals,
            qh: &queue.handle(),
            vgem,
        };
        let p = params(&c);
        for _ in 0..next(4) {
            let offset = [0, 4, 256, 16384, u32::MAX][next(5) as usize];
            let stride = [0, 64, 256, 4096, u32::MAX][next(5) as usize];
            let modifier = [0u64, 1 << 56 | 2, (1 << 56) - 1][next(3) as usize];
            p.add(
                fd(&c).as_fd(),
                next(6) as u32,
                offset,
                stride,
                (modifier >> 32) as u32,
                modifier as u32,
            );
        }
        let format = [
            Fourcc::XRGB8888,
            Fourcc::ARGB8888,
            Fourcc::NV12,
            Fourcc(next(u32::MAX as u64) as u32),
        ][next(4) as usize];
        let size = [-1, 0, 1, 64, 65, i32::MAX][next(6) as usize];
        let flags = params::Flags::from_bits_retain(next(16) as u32);
        if next(2) == 0 {
            p.create_immed(size, 64, format.0, flags, c.qh, ());
        } else {
            p.create(size, 64, format.0, flags);
        }
        let _ = queue.roundtrip(&mut S);
    }
}

#[test]
fn every_protocol_error_reaches_the_client_and_garbage_never_crashes_the_compositor() {
    use winsys::server::params::code as params;
    use winsys::server::syncobj::code as syncobj;
    let _one = common::one_at_a_time();
    let mut c = need!(Compositor::start(&[]), "the reference compositor");
    let vgem = need!(Vgem::open(), "vgem");
    const PARAMS: &str = "zwp_linux_buffer_params_v1";
    const SURFACE: &str = "wp_linux_drm_syncobj_surface_v1";
    const MANAGER: &str = "wp_linux_drm_syncobj_manager_v1";
    let cases: [(&str, bad::Misdeed, &str, u32); 15] = [
        (
            "already_used",
            bad::already_used,
            PARAMS,
            params::ALREADY_USED,
        ),
        ("plane_idx", bad::plane_idx, PARAMS, params::PLANE_IDX),
        ("plane_set", bad::plane_set, PARAMS, params::PLANE_SET),
        ("incomplete", bad::incomplete, PARAMS, params::INCOMPLETE),
        (
            "invalid_format",
            bad::invalid_format,
            PARAMS,
            params::INVALID_FORMAT,
        ),
        (
            "invalid_dimensions",
            bad::invalid_dimensions,
            PARAMS,
            params::INVALID_DIMENSIONS,
        ),
        (
            "out_of_bounds",
            bad::out_of_bounds,
            PARAMS,
            params::OUT_OF_BOUNDS,
        ),
        (
            "invalid_wl_buffer",
            bad::invalid_wl_buffer,
            PARAMS,
            params::INVALID_WL_BUFFER,
        ),
        (
            "no_acquire_point",
            bad::no_acquire_point,
            SURFACE,
            syncobj::NO_ACQUIRE_POINT,
        ),
        (
            "no_release_point",
            bad::no_release_point,
            SURFACE,
            syncobj::NO_RELEASE_POINT,
        ),
        ("no_buffer", bad::no_buffer, SURFACE, syncobj::NO_BUFFER),
        (
            "conflicting_points",
            bad::conflicting_points,
            SURFACE,
            syncobj::CONFLICTING_POINTS,
        ),
        (
            "unsupported_buffer",
            bad::unsupported_buffer,
            SURFACE,
            syncobj::UNSUPPORTED_BUFFER,
        ),
        ("surface_exists", bad::surface_exists, MANAGER, 0),
        ("invalid_timeline", bad::invalid_timeline, MANAGER, 1),
    ];
    for (what, misdeed, interface, code) in cases {
        let got = bad::error_for(&c.socket, &vgem, misdeed);
        println!("{what}: {got:?}");
        assert_eq!(got, (interface.to_string(), code), "{what}");
    }
    assert!(c.alive());
    let s = c
        .wait_stats(LONG, |s| {
            s.protocol_errors >= cases.len() as u64 && s.surfaces == 0
        })
        .unwrap();
    assert_eq!(s.protocol_errors, cases.len() as u64, "{s:?}");
    let fds = c.settled_fds();
    let before = c.fd_targets();
    for seed in 1..=200u64 {
        bad::garbage(&c.socket, &vgem, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        assert!(
            c.alive(),
            "the compositor died on garbage seed {seed}:\n{}",
            c.log_text()
        );
    }
    c.wait_stats(LONG, |s| s.surfaces == 0).unwrap();
    let after = c.fds_down_to(fds, LONG);
    let mut new = c.fd_targets();
    for old in &before {
        if let Some(i) = new.iter().position(|n| n == old) {
            new.remove(i);
        }
    }
    assert!(
        after <= fds,
        "garbage left fds in the compositor: {after} > {fds}; new since: {new:?}"
    );
    // Others are served as before.
    cube(&c, 10, &["--sync", "explicit"], &[]);
}

#[test]
fn run_mode_hosts_one_client_and_leaves_its_last_frame_as_the_png() {
    let _one = common::one_at_a_time();
    let runtime = std::path::PathBuf::from(std::env::var("XDG_RUNTIME_DIR").unwrap());
    let png = runtime.join(format!("winsys-run-mode-{}.png", std::process::id()));
    let out = Command::new(common::built("examples", "compositor"))
        .args([
            "--socket",
            &format!("winsys-run-{}", std::process::id()),
            "--png",
        ])
        .arg(&png)
        .args(["--validation", "--run", "cube", "--frames", "30"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("compositor: done after"), "{text}");
    let shot = Png::read(&png).expect("the PNG");
    let faces = common::cube_frame(shot.width, shot.height, |x, y| shot.pixel(x, y))
        .unwrap_or_else(|why| panic!("the last PNG is no cube frame: {why}"));
    println!("the PNG shows the cube: {faces:?}");
}

#[test]
fn a_feedback_change_makes_the_swapchain_suboptimal_and_a_new_one_fits() {
    use winsys::wayland::swapchain::{Swapchain, SwapchainConfig};
    let _one = common::one_at_a_time();
    let c = need!(
        Compositor::start_with(&[], &["--feedback-change-after", "30"]),
        "the reference compositor"
    );
    let gpu = need!(common::vk::Gpu::new(), "Vulkan with validation");
    let conn = winsys::wayland::connect(Some(&c.socket)).unwrap();
    // The compositor configures a lone toplevel to its whole output.
    let config = SwapchainConfig::new(256, 256, Fourcc::XRGB8888);
    let present = |chain: &mut Swapchain| {
        let i = chain.acquire(LONG * 4).unwrap();
        let mut job = gpu.device.submission().unwrap();
        chain.begin(&mut job, i).unwrap();
        chain.present(i, job).unwrap();
    };
    let mut chain = Swapchain::new(&gpu.device, &conn, &config).unwrap();
    present(&mut chain);
    assert!(!chain.suboptimal().unwrap(), "suboptimal from the start");
    let mut frames = 1;
    while !chain.suboptimal().unwrap() {
        assert!(
            frames < 300,
            "still optimal after {frames} frames:\n{}",
            c.log_text()
        );
        present(&mut chain);
        frames += 1;
    }
    println!("suboptimal after {frames} frames");
    assert!(
        c.log_text().contains("feedback changed"),
        "{}",
        c.log_text()
    );
    drop(chain);
    // A swapchain made now gets the new feedback first: it fits.
    let mut chain = Swapchain::new(&gpu.device, &conn, &config).unwrap();
    for _ in 0..5 {
        present(&mut chain);
    }
    assert!(!chain.suboptimal().unwrap());
}

#[test]
fn a_release_fence_that_is_no_sync_file_is_a_lasting_typed_error() {
    use winsys::wayland::swapchain::{Swapchain, SwapchainConfig};
    use winsys::wayland::Error;
    let _one = common::one_at_a_time();
    let c = need!(
        Compositor::start_with(&[], &["--bad-release-fence"]),
        "the reference compositor"
    );
    let gpu = need!(common::vk::Gpu::new(), "Vulkan with validation");
    let fds_before = common::open_fds();
    let conn = winsys::wayland::connect(Some(&c.socket)).unwrap();
    let mut config = SwapchainConfig::new(256, 256, Fourcc::XRGB8888);
    config.sync = Some(SyncMode::ExplicitSync);
    config.image_count = 3;
    let mut chain = Swapchain::new(&gpu.device, &conn, &config).unwrap();
    assert_eq!(chain.sync_mode(), SyncMode::ExplicitSync);
    // Each present hands a buffer over; the first one the compositor gives
    // back comes with an eventfd as its "fence". Some later call must say
    // so (a typed error naming the buffer), not take the buffer back.
    let mut refused = None;
    for frame in 0..12 {
        let step = (|| -> Result<(), Error> {
            let i = chain.acquire(LONG * 4)?;
            let mut job = gpu.device.submission().unwrap();
            chain.begin(&mut job, i)?;
            chain.present(i, job)
        })();
        match step {
            Ok(()) => {}
            Err(e @ Error::BadReleaseFence { .. }) => {
                println!("frame {frame}: {e}");
                refused = Some(e);
                break;
            }
            Err(e) => panic!("frame {frame}: {e}\n{}", c.log_text()),
        }
    }
    let Some(Error::BadReleaseFence { buffer, source }) = refused else {
        panic!("12 frames and no refusal:\n{}", c.log_text());
    };
    assert!(buffer < 3, "buffer {buffer}");
    assert!(
        matches!(source, winsys::sync::Error::NotSyncFile { .. }),
        "{source:?}"
    );
    // The surface is done for: every later call says so (none hands the
    // refused buffer out again, none waits for it).
    for _ in 0..2 {
        match chain.acquire(LONG) {
            Err(Error::BadReleaseFence { buffer: b, .. }) => assert_eq!(b, buffer),
            other => panic!("after the refusal: {other:?}"),
        }
    }
    let t = Instant::now();
    drop(chain);
    println!("the swapchain dropped in {:?}", t.elapsed());
    drop(conn);
    // Every fd the refusals came with is closed.
    assert_eq!(common::open_fds(), fds_before, "fds leaked");
}

/// The fds of this process open on DRM nodes.
fn dri_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.starts_with("/dev/dri"))
        .count()
}

#[test]
fn a_swapchain_on_a_device_with_no_renderer_makes_dumb_buffers_and_keeps_no_node_open() {
    use winsys::wayland::swapchain::{BufferPath, Swapchain, SwapchainConfig};
    let _one = common::one_at_a_time();
    let c = need!(Compositor::start(&[]), "the reference compositor");
    let gpu = need!(common::vk::Gpu::new(), "Vulkan with validation");
    // The reference compositor's device is vgem: nothing renders there.
    let vgem = DrmDevice::find("vgem", NodeKind::Render).unwrap();
    assert!(!vgem.renders());
    drop(vgem);
    let conn = winsys::wayland::connect(Some(&c.socket)).unwrap();
    // An odd width: the rows are still padded to STRIDE_ALIGN bytes.
    let mut config = SwapchainConfig::new(100, 64, Fourcc::XRGB8888);
    // No drm-syncobj: its timelines are a DRM node of each swapchain's own.
    config.sync = Some(SyncMode::ExplicitSync);
    let dri = dri_fds();
    let t = Instant::now();
    let first = Swapchain::new(&gpu.device, &conn, &config).unwrap();
    let first_took = t.elapsed();
    assert_eq!(
        first.buffer_path(),
        &BufferPath::CompositorDevice {
            driver: "vgem".into()
        }
    );
    assert_eq!(
        dri_fds(),
        dri,
        "the dma-bufs alone keep dumb buffers: no DRM node stays open"
    );
    let plane = &first.dmabuf(0).planes()[0];
    assert_eq!(plane.stride(), 512, "100 pixels' rows padded to 256 bytes");
    // What a resize does: the new swapchain is made before the old one goes.
    let t = Instant::now();
    let second = Swapchain::new(&gpu.device, &conn, &config).unwrap();
    let second_took = t.elapsed();
    println!("first swapchain made in {first_took:?}, the second in {second_took:?}");
    assert_eq!(second.buffer_path(), first.buffer_path());
    assert_eq!(dri_fds(), dri);
    drop((first, second));
    assert_eq!(dri_fds(), dri);
}

/// The test's own client state: a bare `wl_surface` of its own, as an app
/// that hands its surface to winsys has.
struct App;

impl
    wayland_client::Dispatch<
        wayland_client::protocol::wl_registry::WlRegistry,
        wayland_client::globals::GlobalListContents,
    > for App
{
    fn event(
        _: &mut Self,
        _: &wayland_client::protocol::wl_registry::WlRegistry,
        _: wayland_client::protocol::wl_registry::Event,
        _: &wayland_client::globals::GlobalListContents,
        _: &wayland_client::Connection,
        _: &wayland_client::QueueHandle<Self>,
    ) {
    }
}
wayland_client::delegate_noop!(App: ignore wayland_client::protocol::wl_compositor::WlCompositor);
wayland_client::delegate_noop!(App: ignore wayland_client::protocol::wl_surface::WlSurface);

#[test]
fn a_surface_that_failed_half_made_leaves_the_apps_wl_surface_free_for_a_retry() {
    use winsys::wayland::Error;
    let _one = common::one_at_a_time();
    let (c, stall) = need!(
        Compositor::start_stalling("--stall-on-syncobj-surface"),
        "the reference compositor"
    );
    let fds_before = common::open_fds();
    let conn = winsys::wayland::connect(Some(&c.socket)).unwrap();
    let (globals, mut queue) =
        wayland_client::globals::registry_queue_init::<App>(&conn).expect("the registry");
    let compositor: wayland_client::protocol::wl_compositor::WlCompositor = globals
        .bind(&queue.handle(), 4..=6, ())
        .expect("wl_compositor");
    let surface = compositor.create_surface(&queue.handle(), ());
    // The compositor stops answering once it has made the surface's
    // drm-syncobj object: the construction times out half made.
    match Surface::for_surface(
        &conn,
        &surface,
        SyncMode::DrmSyncobj,
        Duration::from_secs(2),
    ) {
        Err(Error::Timeout { what, .. }) => println!("first try: timed out waiting for {what}"),
        Err(e) => panic!("first try: {e}\n{}", c.log_text()),
        Ok(_) => panic!(
            "first try: made, though the compositor stalled\n{}",
            c.log_text()
        ),
    }
    stall.release();
    // The half-made one destroyed its drm-syncobj object, so the retry may
    // make one for the same wl_surface (else: surface_exists, a protocol
    // error that ends the connection).
    let retry = Surface::for_surface(&conn, &surface, SyncMode::DrmSyncobj, LONG)
        .unwrap_or_else(|e| panic!("the retry: {e}\n{}", c.log_text()));
    assert_eq!(retry.mode(), SyncMode::DrmSyncobj);
    drop(retry);
    surface.destroy();
    // The connection is whole: no protocol error ended it.
    queue
        .roundtrip(&mut App)
        .unwrap_or_else(|e| panic!("after the retry: {e}\n{}", c.log_text()));
    drop((globals, queue, conn));
    assert_eq!(common::open_fds(), fds_before, "fds leaked");
}
