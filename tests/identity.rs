//! One buffer, many fds: a dma-buf is identified by its inode, not by the
//! fd number that names it (a Wayland client sends one fd per plane).

mod common;

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::sync::Mutex;

use common::{need, open_fds};
use winsys::alloc::vgem::{Vgem, VgemBuffer};
use winsys::dmabuf::ImplicitFence;
use winsys::dmabuf::{Access, Dmabuf, DmabufId, Error};
use winsys::format::{Fourcc, Modifier};

/// Tests that count open fds run one at a time.
static FDS: Mutex<()> = Mutex::new(());

/// The same image rebuilt from a separate dup of the dma-buf per plane.
fn rebuilt_with_dups(buf: &Dmabuf) -> Dmabuf {
    let mut b = Dmabuf::builder(buf.width(), buf.height(), buf.format(), buf.modifier());
    for p in buf.planes() {
        b = b.plane(p.fd().try_clone_to_owned().unwrap(), p.offset(), p.stride());
    }
    b.build().unwrap()
}

/// An NV12 64x32 image in one vgem buffer (an R8 64x48 dumb buffer: luma
/// rows, then chroma rows), as one fd.
fn nv12_in_one_buffer(vgem: &Vgem) -> (VgemBuffer, Dmabuf) {
    let raw = vgem.create(64, 48, Fourcc::R8).unwrap();
    let p = &raw.dmabuf().planes()[0];
    let buf = Dmabuf::builder(64, 32, Fourcc::NV12, Modifier::LINEAR)
        .plane(p.shared_fd().clone(), 0, p.stride())
        .plane(p.shared_fd().clone(), p.stride() * 32, p.stride())
        .build()
        .unwrap();
    (raw, buf)
}

#[test]
fn planes_sent_as_separate_fds_are_one_dmabuf() {
    let _one_at_a_time = FDS.lock().unwrap_or_else(|e| e.into_inner());
    let vgem = need!(Vgem::open(), "vgem");
    let (_raw, buf) = nv12_in_one_buffer(&vgem);
    let fds_before = open_fds();
    let again = rebuilt_with_dups(&buf);
    // The builder keeps one fd per dma-buf: the second dup was closed.
    assert_eq!(open_fds(), fds_before + 1);
    assert_eq!(again.planes()[0].id(), again.planes()[1].id());
    assert_eq!(again.planes()[0].id(), buf.planes()[0].id());
    assert_eq!(again.distinct_fds().count(), 1);
    assert!(!again.is_disjoint());
    assert_eq!(again, buf, "equal by dma-buf identity, not fd numbers");
    let set: HashSet<Dmabuf> = [buf.clone(), again.clone()].into_iter().collect();
    assert_eq!(set.len(), 1, "hash follows identity");

    // One mapping, one fence export, for one dma-buf.
    let map = again.map(Access::Read).unwrap();
    assert_eq!(map.mapping_count(), 1);
    drop(map);
    // One fence snapshot (6.0+) or one dma-buf polled (older kernels).
    match again.implicit_fence(Access::Read).unwrap() {
        ImplicitFence::SyncFile(fence) => {
            assert_eq!(fence.info().unwrap().fences.len(), 1);
        }
        poll => assert_eq!(poll.poll_fds().len(), 1),
    }
}

#[test]
fn different_dmabufs_or_layouts_are_not_equal() {
    let _one_at_a_time = FDS.lock().unwrap_or_else(|e| e.into_inner());
    let vgem = need!(Vgem::open(), "vgem");
    let (va, vb) = (
        vgem.create(64, 32, Fourcc::XRGB8888).unwrap(),
        vgem.create(64, 32, Fourcc::XRGB8888).unwrap(),
    );
    let (a, b) = (va.dmabuf(), vb.dmabuf());
    assert_ne!(a.planes()[0].id(), b.planes()[0].id());
    assert_ne!(a, b);
    // Same dma-buf, another size or stride: another image.
    let p = &a.planes()[0];
    let smaller = Dmabuf::builder(32, 32, Fourcc::XRGB8888, Modifier::LINEAR)
        .plane(p.fd().try_clone_to_owned().unwrap(), 0, p.stride())
        .build()
        .unwrap();
    assert_eq!(smaller.planes()[0].id(), p.id());
    assert_ne!(&smaller, a);
    // Two dma-bufs for two planes: disjoint, two fds kept.
    let (vy, vuv) = (
        vgem.create(64, 32, Fourcc::R8).unwrap(),
        vgem.create(32, 16, Fourcc::GR88).unwrap(),
    );
    let (y, uv) = (vy.dmabuf(), vuv.dmabuf());
    let nv12 = Dmabuf::builder(64, 32, Fourcc::NV12, Modifier::LINEAR)
        .plane(y.planes()[0].shared_fd().clone(), 0, y.planes()[0].stride())
        .plane(
            uv.planes()[0].shared_fd().clone(),
            0,
            uv.planes()[0].stride(),
        )
        .build()
        .unwrap();
    assert!(nv12.is_disjoint());
    assert_eq!(nv12.distinct_fds().count(), 2);
}

#[test]
fn an_id_needs_a_dmabuf() {
    let _one_at_a_time = FDS.lock().unwrap_or_else(|e| e.into_inner());
    let vgem = need!(Vgem::open(), "vgem");
    let raw = vgem.create(16, 16, Fourcc::XRGB8888).unwrap();
    let buf = raw.dmabuf();
    let id = DmabufId::of(buf.planes()[0].fd()).unwrap();
    assert_eq!(id, buf.planes()[0].id());
    assert_eq!(
        DmabufId::of(buf.planes()[0].fd().try_clone_to_owned().unwrap()).unwrap(),
        id
    );
    let (r, _w) = rustix::pipe::pipe().unwrap();
    let fds = open_fds();
    assert!(matches!(
        DmabufId::of(r.as_fd()),
        Err(Error::NotDmabuf { plane: 0, .. })
    ));
    assert_eq!(open_fds(), fds);
}
