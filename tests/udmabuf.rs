//! The kernel's udmabuf selftest cases (tools/testing/selftests/drivers/
//! dma-buf/udmabuf.c), through winsys: each refusal is a typed error, each
//! success is checked with data.

mod common;

use std::os::fd::AsFd;

use common::{need, pattern, pwrite_all};
use rustix::fs::{MemfdFlags, SealFlags};
use winsys::alloc::udmabuf::{sealed_memfd, Udmabuf};
use winsys::alloc::Error;
use winsys::dmabuf::{Access, Dmabuf};
use winsys::format::{Fourcc, Modifier};

const NUM_PAGES: u64 = 4;

fn page() -> u64 {
    rustix::param::page_size() as u64
}

#[test]
fn unaligned_offset_is_refused() {
    let dev = need!(Udmabuf::open(), "/dev/udmabuf");
    let memfd = sealed_memfd("t1", page() * NUM_PAGES).unwrap();
    let err = dev.create(&memfd, page() / 2, page()).unwrap_err();
    assert!(
        matches!(err, Error::Unaligned { what: "offset", .. }),
        "{err}"
    );
}

#[test]
fn unaligned_size_is_refused() {
    let dev = need!(Udmabuf::open(), "/dev/udmabuf");
    let memfd = sealed_memfd("t2", page() * NUM_PAGES).unwrap();
    let err = dev.create(&memfd, 0, page() / 2).unwrap_err();
    assert!(
        matches!(err, Error::Unaligned { what: "size", .. }),
        "{err}"
    );
}

#[test]
fn not_a_memfd_is_refused() {
    let dev = need!(Udmabuf::open(), "/dev/udmabuf");
    let (pipe, _w) = rustix::pipe::pipe().unwrap();
    let err = dev.create(&pipe, 0, page()).unwrap_err();
    assert!(matches!(err, Error::BadMemfd(_)), "{err}");
}

#[test]
fn memfd_without_shrink_seal_or_with_write_seal_is_refused() {
    let dev = need!(Udmabuf::open(), "/dev/udmabuf");
    let unsealed = rustix::fs::memfd_create("t3", MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&unsealed, page()).unwrap();
    assert!(matches!(
        dev.create(&unsealed, 0, page()),
        Err(Error::BadMemfd(_))
    ));
    let write_sealed = sealed_memfd("t4", page()).unwrap();
    rustix::fs::fcntl_add_seals(&write_sealed, SealFlags::WRITE).unwrap();
    assert!(matches!(
        dev.create(&write_sealed, 0, page()),
        Err(Error::BadMemfd(_))
    ));
    let small = sealed_memfd("t5", page()).unwrap();
    assert!(matches!(
        dev.create(&small, 0, 2 * page()),
        Err(Error::BadMemfd(_))
    ));
}

#[test]
fn create_works_and_shares_the_pages_with_the_memfd() {
    let dev = need!(Udmabuf::open(), "/dev/udmabuf");
    let size = page() * NUM_PAGES;
    let memfd = sealed_memfd("t6", size).unwrap();
    pwrite_all(&memfd, &vec![b'a'; size as usize], 0);
    let fd = dev.create(&memfd, 0, size).unwrap();
    let width = (page() / 4) as u32;
    let buf = Dmabuf::builder(width, NUM_PAGES as u32, Fourcc::XRGB8888, Modifier::LINEAR)
        .plane(fd, 0, page() as u32)
        .build()
        .unwrap();
    assert_eq!(buf.planes()[0].buffer_size(), size);
    let map = buf.map(Access::Read).unwrap();
    assert!(map
        .read(None)
        .unwrap()
        .to_vec(0)
        .unwrap()
        .iter()
        .all(|&b| b == b'a'));
    let later = pattern(size as usize, 9);
    pwrite_all(&memfd, &later, 0);
    assert_eq!(map.read(None).unwrap().to_vec(0).unwrap(), &later[..]);
}

#[test]
fn create_with_offset_maps_the_right_pages() {
    let dev = need!(Udmabuf::open(), "/dev/udmabuf");
    let size = page() * NUM_PAGES;
    let memfd = sealed_memfd("t7", size).unwrap();
    let data = pattern(size as usize, 11);
    pwrite_all(&memfd, &data, 0);
    let fd = dev.create(&memfd, page(), page()).unwrap();
    let buf = Dmabuf::builder((page() / 4) as u32, 1, Fourcc::XRGB8888, Modifier::LINEAR)
        .plane(fd, 0, page() as u32)
        .build()
        .unwrap();
    let map = buf.map(Access::Read).unwrap();
    assert_eq!(
        map.read(None).unwrap().to_vec(0).unwrap(),
        &data[page() as usize..2 * page() as usize]
    );
}

#[test]
fn create_list_joins_ranges_of_several_memfds_in_order() {
    let dev = need!(Udmabuf::open(), "/dev/udmabuf");
    let a = sealed_memfd("la", page() * 2).unwrap();
    let b = sealed_memfd("lb", page() * 2).unwrap();
    pwrite_all(&a, &vec![1u8; 2 * page() as usize], 0);
    pwrite_all(&b, &vec![2u8; 2 * page() as usize], 0);
    let fd = dev
        .create_list(&[
            (a.as_fd(), 0, page()),
            (b.as_fd(), page(), page()),
            (a.as_fd(), page(), page()),
        ])
        .unwrap();
    let buf = Dmabuf::builder((page() / 4) as u32, 3, Fourcc::XRGB8888, Modifier::LINEAR)
        .plane(fd, 0, page() as u32)
        .build()
        .unwrap();
    let map = buf.map(Access::Read).unwrap();
    let guard = map.read(None).unwrap();
    let bytes = guard.to_vec(0).unwrap();
    let p = page() as usize;
    assert!(bytes[..p].iter().all(|&x| x == 1));
    assert!(bytes[p..2 * p].iter().all(|&x| x == 2));
    assert!(bytes[2 * p..].iter().all(|&x| x == 1));
    // Writes through the memfd after creation show up too.
    pwrite_all(&b, &[7u8], page());
    drop(guard);
    assert_eq!(map.read(None).unwrap().to_vec(0).unwrap()[p], 7);
}

#[test]
fn udmabuf_mmap_is_shared_only_and_size_is_reported() {
    let dev = need!(Udmabuf::open(), "/dev/udmabuf");
    let memfd = sealed_memfd("t8", page()).unwrap();
    let fd = dev.create(&memfd, 0, page()).unwrap();
    assert_eq!(
        rustix::fs::seek(&fd, rustix::fs::SeekFrom::End(0)).unwrap(),
        page()
    );
    // SAFETY: a fresh private mapping request the kernel must refuse; if it
    // were granted it is unmapped at once and never touched.
    let private = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            page() as usize,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::PRIVATE,
            &fd,
            0,
        )
    };
    assert_eq!(private.unwrap_err(), rustix::io::Errno::INVAL);
}
