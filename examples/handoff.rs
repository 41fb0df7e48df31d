//! A producer and a consumer process hand a dma-buf and its fence to each
//! other over a Unix socket (SCM_RIGHTS).
//!
//! The producer allocates a vgem buffer, attaches a vgem WRITE fence (a
//! "GPU" still rendering), exports that fence as a sync_file and sends both
//! fds before a single pixel is written. Its "GPU" then writes the frame
//! through the exporter's own mapping and signals the fence. The consumer
//! validates what it received, maps the dma-buf and begins a READ guard:
//! `DMA_BUF_IOCTL_SYNC` START(READ) waits for the producer's write fence, so
//! it sees the whole frame, never a half-written one. It replies with a
//! checksum the producer checks.
//!
//! On kernels before 6.0 (no `DMA_BUF_IOCTL_EXPORT_SYNC_FILE`) the
//! producer's [`Dmabuf::implicit_fence`] falls back to a poll-based fence
//! that cannot travel as a sync_file: the producer then sends the dma-buf
//! alone, and the consumer relies on implicit sync (its READ guard waits
//! for the write fence in the dma-buf either way).
//!
//! Run: `cargo run --example handoff` (needs vgem: `modprobe vgem`, root).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use winsys::alloc::vgem::Vgem;
use winsys::dmabuf::{Access, Dmabuf};
use winsys::format::{Fourcc, Modifier};
use winsys::sync::SyncFile;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const WIDTH: u32 = 256;
const HEIGHT: u32 = 256;
const SOCKET_ENV: &str = "WINSYS_HANDOFF_SOCKET";

/// The header sent with the fds: what the consumer needs to rebuild the
/// `Dmabuf` (a real protocol would be linux-dmabuf's).
#[derive(Debug, Clone, Copy)]
struct Header {
    width: u32,
    height: u32,
    format: u32,
    offset: u32,
    stride: u32,
    modifier: u64,
}

impl Header {
    fn to_bytes(self) -> [u8; 28] {
        let mut out = [0u8; 28];
        for (i, v) in [
            self.width,
            self.height,
            self.format,
            self.offset,
            self.stride,
        ]
        .iter()
        .enumerate()
        {
            out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        out[20..].copy_from_slice(&self.modifier.to_le_bytes());
        out
    }

    fn from_bytes(b: &[u8; 28]) -> Self {
        let u = |i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
        Header {
            width: u(0),
            height: u(1),
            format: u(2),
            offset: u(3),
            stride: u(4),
            modifier: u64::from_le_bytes(b[20..].try_into().unwrap()),
        }
    }
}

fn pixel(x: u32, y: u32) -> u32 {
    0xff00_0000 | (x << 16) | (y << 8) | ((x ^ y) & 0xff)
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !cmsg.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err("control message buffer too small".into());
    }
    rustix::net::sendmsg(sock, &[IoSlice::new(bytes)], &mut cmsg, SendFlags::empty())?;
    Ok(())
}

fn recv(sock: BorrowedFd<'_>, bytes: &mut [u8]) -> Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(bytes)],
        &mut cmsg,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    Ok((msg.bytes, fds))
}

fn producer() -> Result<()> {
    let (mine, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // dup(2) clears close-on-exec: the consumer inherits the dup and learns
    // its number from the environment.
    let inherited = rustix::io::dup(&theirs)?;
    let child = Command::new(std::env::current_exe()?)
        .env(SOCKET_ENV, inherited.as_raw_fd().to_string())
        .spawn()?;
    drop((inherited, theirs));

    let vgem = Vgem::open()?;
    let buf = vgem.create(WIDTH, HEIGHT, Fourcc::XRGB8888)?;
    buf.dmabuf().set_name("handoff-frame")?;
    let gpu = buf.attach_fence(Access::Write)?; // rendering "in flight"
                                                // A sync_file where the kernel can export one (6.0+), else implicit sync.
    let acquire = buf.dmabuf().implicit_fence(Access::Read)?.into_sync_file();
    let plane = &buf.dmabuf().planes()[0];
    let header = Header {
        width: WIDTH,
        height: HEIGHT,
        format: Fourcc::XRGB8888.0,
        offset: plane.offset(),
        stride: plane.stride(),
        modifier: Modifier::LINEAR.0,
    };
    let mut fds = vec![plane.fd()];
    fds.extend(acquire.as_ref().map(|a| a.as_fd()));
    send(mine.as_fd(), &header.to_bytes(), &fds)?;
    match &acquire {
        Some(a) => println!(
            "producer: sent dma-buf + acquire fence ({:?}) before rendering",
            a.status()?
        ),
        None => println!(
            "producer: sent the dma-buf before rendering; no sync_file on this kernel \
             (before 6.0), so the consumer relies on implicit sync"
        ),
    }

    // The "GPU" renders through the exporter's own view, then signals.
    std::thread::sleep(Duration::from_millis(200));
    let mut gem = buf.map_gem()?;
    let stride = plane.stride() as usize;
    let mut frame = vec![0u8; stride * HEIGHT as usize];
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let at = y as usize * stride + x as usize * 4;
            frame[at..at + 4].copy_from_slice(&pixel(x, y).to_le_bytes());
        }
    }
    gem.write_bytes(0, &frame)?;
    let expected = checksum(&frame);
    gpu.signal()?;
    println!("producer: frame rendered, write fence signaled");

    let mut reply = [0u8; 8];
    let (n, _) = recv(mine.as_fd(), &mut reply)?;
    let status = child.wait_with_output()?.status;
    if n != 8 || !status.success() {
        return Err(format!("consumer failed ({status})").into());
    }
    let got = u64::from_le_bytes(reply);
    if got != expected {
        return Err(format!("consumer saw checksum {got:#x}, rendered {expected:#x}").into());
    }
    println!("producer: consumer saw exactly the rendered frame (checksum {got:#018x})");
    Ok(())
}

fn consumer(raw: i32) -> Result<()> {
    // SAFETY: the producer passed us this inherited socket fd number in the
    // environment; nothing else in this process owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut header = [0u8; 28];
    let (n, mut fds) = recv(sock.as_fd(), &mut header)?;
    if n != header.len() || fds.is_empty() || fds.len() > 2 {
        return Err(format!("bad message: {n} bytes, {} fds", fds.len()).into());
    }
    let h = Header::from_bytes(&header);
    let acquire = match fds.len() {
        2 => Some(SyncFile::from_fd(fds.pop().unwrap())?),
        _ => None,
    };
    let dmabuf = Dmabuf::builder(h.width, h.height, Fourcc(h.format), Modifier(h.modifier))
        .plane(fds.pop().unwrap(), h.offset, h.stride)
        .build()?;
    match &acquire {
        Some(acquire) => {
            let info = acquire.info()?;
            println!(
                "consumer: got {}x{} {} dma-buf; acquire fence from driver {:?} is {:?}",
                dmabuf.width(),
                dmabuf.height(),
                dmabuf.format(),
                info.fences
                    .first()
                    .map(|f| f.driver.as_str())
                    .unwrap_or("?"),
                info.status
            );
        }
        None => println!(
            "consumer: got {}x{} {} dma-buf without a sync_file: implicit sync",
            dmabuf.width(),
            dmabuf.height(),
            dmabuf.format()
        ),
    }
    let map = dmabuf.map(Access::Read)?;
    let start = Instant::now();
    let frame = map.read(Some(Duration::from_secs(5)))?; // waits for the write fence
    println!(
        "consumer: read access began after {:?} (the producer's fence)",
        start.elapsed()
    );
    let mut pixels = vec![0u8; h.stride as usize * h.height as usize];
    frame.read_bytes(0, 0, &mut pixels)?; // a copy: the pages are shared
    let sum = checksum(&pixels);
    let corner = u32::from_le_bytes(pixels[4..8].try_into()?);
    if corner != pixel(1, 0) {
        return Err(format!(
            "pixel (1,0) is {corner:#010x}, expected {:#010x}",
            pixel(1, 0)
        )
        .into());
    }
    drop(frame);
    send(sock.as_fd(), &sum.to_le_bytes(), &[])?;
    Ok(())
}

fn main() -> ExitCode {
    let result = match std::env::var(SOCKET_ENV) {
        Ok(fd) => fd
            .parse()
            .map_err(|e| format!("{SOCKET_ENV}: {e}").into())
            .and_then(consumer),
        Err(_) => producer(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handoff: {e}");
            ExitCode::FAILURE
        }
    }
}
