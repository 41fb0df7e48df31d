//! linux-dmabuf feedback (`zwp_linux_dmabuf_feedback_v1`, version 4+):
//! which device the compositor works on, and which format + modifier pairs
//! it takes, in tranches of preference.
//!
//! The compositor sends a format table once (a memfd of 16-byte entries:
//! `u32 format, u32 padding, u64 modifier`), then tranches that name
//! entries of it by 16-bit index, each with a target device (`dev_t`) and
//! flags, then `done`. [`FeedbackBuilder`] turns that event stream into a
//! [`Feedback`]; every parser of outside data here refuses malformed input
//! with a typed [`FeedbackError`] instead of trusting it.

use std::os::fd::{AsFd, OwnedFd};

use crate::format::{Fourcc, Modifier};

/// Malformed feedback from the compositor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FeedbackError {
    /// The format table's size is not a multiple of 16 bytes.
    #[error("format table of {0} bytes is not made of 16-byte entries")]
    TableSize(usize),
    /// The format table could not be mapped.
    #[error("cannot map the format table ({0})")]
    TableMap(String),
    /// A `dev_t` array of the wrong size.
    #[error("a dev_t array of {0} bytes (expected {size})", size = std::mem::size_of::<u64>())]
    DevT(usize),
    /// A tranche's index array of an odd number of bytes.
    #[error("tranche format indices of {0} bytes are not 16-bit values")]
    Indices(usize),
    /// A tranche names an entry past the end of the format table.
    #[error("tranche names format table entry {index}, the table has {len}")]
    IndexOutOfRange {
        /// The index.
        index: u16,
        /// Entries in the table.
        len: usize,
    },
    /// Tranches came before any format table.
    #[error("tranche formats before a format table")]
    NoTable,
    /// `done` came without a main device.
    #[error("feedback done without a main device")]
    NoMainDevice,
}

/// The format table: every format + modifier pair the compositor may name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormatTable {
    entries: Vec<(Fourcc, Modifier)>,
}

impl FormatTable {
    /// Parse the table's bytes (16-byte entries, native endian).
    pub fn parse(bytes: &[u8]) -> Result<Self, FeedbackError> {
        if !bytes.len().is_multiple_of(16) {
            return Err(FeedbackError::TableSize(bytes.len()));
        }
        let entries = bytes
            .chunks_exact(16)
            .map(|e| {
                let format = u32::from_ne_bytes(e[0..4].try_into().expect("4 bytes"));
                let modifier = u64::from_ne_bytes(e[8..16].try_into().expect("8 bytes"));
                (Fourcc(format), Modifier(modifier))
            })
            .collect();
        Ok(FormatTable { entries })
    }

    /// Read the table from the fd the compositor sent. It is read with
    /// `pread` into our own memory, not mapped: the compositor owns the fd
    /// and could shrink it under a mapping (SIGBUS). A table larger than
    /// 16-bit indices can reach (65536 entries) is refused.
    pub fn from_fd(fd: impl AsFd, size: u32) -> Result<Self, FeedbackError> {
        const MAX: usize = 65536 * 16;
        let len = size as usize;
        if !len.is_multiple_of(16) {
            return Err(FeedbackError::TableSize(len));
        }
        if len > MAX {
            return Err(FeedbackError::TableMap(format!(
                "{len} bytes: more than 16-bit indices can name ({MAX})"
            )));
        }
        let mut copy = vec![0u8; len];
        let mut at = 0;
        while at < len {
            match rustix::io::pread(&fd, &mut copy[at..], at as u64) {
                Ok(0) => {
                    return Err(FeedbackError::TableMap(format!(
                        "the fd has {at} bytes, the event says {len}"
                    )))
                }
                Ok(n) => at += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(FeedbackError::TableMap(e.to_string())),
            }
        }
        Self::parse(&copy)
    }

    /// Entry `index`.
    pub fn get(&self, index: u16) -> Option<(Fourcc, Modifier)> {
        self.entries.get(index as usize).copied()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One tranche: formats a device takes, in the compositor's preference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tranche {
    /// The device buffers of this tranche should be allocated for.
    pub target_device: u64,
    /// Buffers in this tranche may be scanned out directly.
    pub scanout: bool,
    /// The format + modifier pairs, in the order sent.
    pub formats: Vec<(Fourcc, Modifier)>,
}

/// A complete feedback: the main device and the tranches, in preference
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    /// The device the compositor composites with (`dev_t`).
    pub main_device: u64,
    /// Tranches, most preferred first.
    pub tranches: Vec<Tranche>,
}

impl Feedback {
    /// The first tranche with a pair that `usable` accepts (what the
    /// allocator and the renderer can both do), and that pair: what a
    /// client should allocate, on the tranche's target device.
    pub fn pick(
        &self,
        mut usable: impl FnMut(Fourcc, Modifier) -> bool,
    ) -> Option<(&Tranche, Fourcc, Modifier)> {
        self.tranches.iter().find_map(|t| {
            t.formats
                .iter()
                .find(|(f, m)| usable(*f, *m))
                .map(|&(f, m)| (t, f, m))
        })
    }

    /// Every modifier any tranche offers for `format`, deduplicated, in
    /// order of first appearance.
    pub fn modifiers(&self, format: Fourcc) -> Vec<Modifier> {
        let mut out = Vec::new();
        for t in &self.tranches {
            for &(f, m) in &t.formats {
                if f == format && !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out
    }
}

/// Collects the events of one `zwp_linux_dmabuf_feedback_v1` round.
///
/// A compositor may send feedback again later (a new table, new tranches):
/// each `done` yields a complete [`Feedback`], and a changed one is the
/// client's cue that its buffers are suboptimal.
#[derive(Debug, Default)]
pub struct FeedbackBuilder {
    table: Option<FormatTable>,
    main_device: Option<u64>,
    tranches: Vec<Tranche>,
    pending: Tranche,
    error: Option<FeedbackError>,
}

/// A `dev_t` from a protocol array (native endian).
pub fn dev_t_from(bytes: &[u8]) -> Result<u64, FeedbackError> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| FeedbackError::DevT(bytes.len()))?;
    Ok(u64::from_ne_bytes(raw))
}

impl FeedbackBuilder {
    /// A new, empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    fn fail(&mut self, e: FeedbackError) {
        self.error.get_or_insert(e);
    }

    /// `format_table`: the table's fd and size.
    pub fn format_table(&mut self, fd: OwnedFd, size: u32) {
        match FormatTable::from_fd(&fd, size) {
            Ok(t) => self.table = Some(t),
            Err(e) => self.fail(e),
        }
    }

    /// `main_device`.
    pub fn main_device(&mut self, device: &[u8]) {
        match dev_t_from(device) {
            Ok(d) => self.main_device = Some(d),
            Err(e) => self.fail(e),
        }
    }

    /// `tranche_target_device`.
    pub fn tranche_target_device(&mut self, device: &[u8]) {
        match dev_t_from(device) {
            Ok(d) => self.pending.target_device = d,
            Err(e) => self.fail(e),
        }
    }

    /// `tranche_formats`: 16-bit indices into the table.
    pub fn tranche_formats(&mut self, indices: &[u8]) {
        if !indices.len().is_multiple_of(2) {
            return self.fail(FeedbackError::Indices(indices.len()));
        }
        let Some(table) = &self.table else {
            return self.fail(FeedbackError::NoTable);
        };
        let mut formats = Vec::with_capacity(indices.len() / 2);
        for pair in indices.chunks_exact(2) {
            let index = u16::from_ne_bytes([pair[0], pair[1]]);
            match table.get(index) {
                Some(e) => formats.push(e),
                None => {
                    let len = table.len();
                    return self.fail(FeedbackError::IndexOutOfRange { index, len });
                }
            }
        }
        self.pending.formats.extend(formats);
    }

    /// `tranche_flags`.
    pub fn tranche_flags(&mut self, flags: u32) {
        self.pending.scanout = flags & 1 != 0;
    }

    /// `tranche_done`.
    pub fn tranche_done(&mut self) {
        let t = std::mem::take(&mut self.pending);
        self.tranches.push(t);
    }

    /// `done`: the complete feedback (the table is kept for a later round
    /// that does not resend it).
    pub fn done(&mut self) -> Result<Feedback, FeedbackError> {
        let tranches = std::mem::take(&mut self.tranches);
        self.pending = Tranche::default();
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let main_device = self.main_device.ok_or(FeedbackError::NoMainDevice)?;
        Ok(Feedback {
            main_device,
            tranches,
        })
    }
}

impl FeedbackBuilder {
    /// Take one `zwp_linux_dmabuf_feedback_v1` event; the parsed feedback
    /// when it was `done`.
    pub(crate) fn feed(
        &mut self,
        event: wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_dmabuf_feedback_v1::Event,
    ) -> Option<Result<Feedback, FeedbackError>> {
        use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_dmabuf_feedback_v1::Event;
        match event {
            Event::FormatTable { fd, size } => self.format_table(fd, size),
            Event::MainDevice { device } => self.main_device(&device),
            Event::TrancheTargetDevice { device } => self.tranche_target_device(&device),
            Event::TrancheFormats { indices } => self.tranche_formats(&indices),
            Event::TrancheFlags { flags } => self.tranche_flags(match flags {
                wayland_client::WEnum::Value(f) => f.bits(),
                wayland_client::WEnum::Unknown(u) => u,
            }),
            Event::TrancheDone => self.tranche_done(),
            Event::Done => return Some(self.done()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_bytes(entries: &[(Fourcc, Modifier)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (f, m) in entries {
            out.extend(f.0.to_ne_bytes());
            out.extend(0u32.to_ne_bytes());
            out.extend(m.0.to_ne_bytes());
        }
        out
    }

    fn indices(i: &[u16]) -> Vec<u8> {
        i.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    const X_TILED: Modifier = Modifier((1 << 56) | 1);

    fn builder_with_table() -> FeedbackBuilder {
        let entries = [
            (Fourcc::XRGB8888, Modifier::LINEAR),
            (Fourcc::XRGB8888, X_TILED),
            (Fourcc::ARGB8888, Modifier::LINEAR),
        ];
        let memfd = rustix::fs::memfd_create("table", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let bytes = table_bytes(&entries);
        rustix::io::write(&memfd, &bytes).unwrap();
        let mut b = FeedbackBuilder::new();
        b.format_table(memfd, bytes.len() as u32);
        b
    }

    #[test]
    fn a_feedback_round_becomes_tranches_in_order() {
        let mut b = builder_with_table();
        b.main_device(&0xe280u64.to_ne_bytes());
        b.tranche_target_device(&0xe280u64.to_ne_bytes());
        b.tranche_flags(1);
        b.tranche_formats(&indices(&[1]));
        b.tranche_done();
        b.tranche_target_device(&0xe281u64.to_ne_bytes());
        b.tranche_formats(&indices(&[0, 2]));
        b.tranche_done();
        let fb = b.done().unwrap();
        assert_eq!(fb.main_device, 0xe280);
        assert_eq!(fb.tranches.len(), 2);
        assert!(fb.tranches[0].scanout && !fb.tranches[1].scanout);
        assert_eq!(fb.tranches[0].formats, [(Fourcc::XRGB8888, X_TILED)]);
        assert_eq!(fb.tranches[1].target_device, 0xe281);
        // Only LINEAR usable: the second tranche's pair.
        let (t, f, m) = fb.pick(|_, m| m == Modifier::LINEAR).unwrap();
        assert_eq!(
            (t.target_device, f, m),
            (0xe281, Fourcc::XRGB8888, Modifier::LINEAR)
        );
        assert_eq!(fb.modifiers(Fourcc::XRGB8888), [X_TILED, Modifier::LINEAR]);
        assert!(fb.pick(|f, _| f == Fourcc::NV12).is_none());
        // A second round reuses the table.
        b.main_device(&0xe280u64.to_ne_bytes());
        b.tranche_formats(&indices(&[2]));
        b.tranche_done();
        assert_eq!(
            b.done().unwrap().tranches[0].formats,
            [(Fourcc::ARGB8888, Modifier::LINEAR)]
        );
    }

    #[test]
    fn malformed_feedback_is_a_typed_error() {
        assert_eq!(
            FormatTable::parse(&[0; 15]),
            Err(FeedbackError::TableSize(15))
        );
        let mut b = builder_with_table();
        b.main_device(&[1, 2, 3]);
        assert_eq!(b.done(), Err(FeedbackError::DevT(3)));
        let mut b = builder_with_table();
        b.main_device(&7u64.to_ne_bytes());
        b.tranche_formats(&indices(&[3]));
        assert_eq!(
            b.done(),
            Err(FeedbackError::IndexOutOfRange { index: 3, len: 3 })
        );
        let mut b = builder_with_table();
        b.main_device(&7u64.to_ne_bytes());
        b.tranche_formats(&[0, 0, 1]);
        assert_eq!(b.done(), Err(FeedbackError::Indices(3)));
        let mut b = FeedbackBuilder::new();
        b.main_device(&7u64.to_ne_bytes());
        b.tranche_formats(&indices(&[0]));
        assert_eq!(b.done(), Err(FeedbackError::NoTable));
        let mut b = builder_with_table();
        assert_eq!(b.done(), Err(FeedbackError::NoMainDevice));
        // A table fd smaller than the size claimed, or larger than 16-bit
        // indices reach, is refused.
        let memfd = rustix::fs::memfd_create("short", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        assert!(matches!(
            FormatTable::from_fd(&memfd, 32),
            Err(FeedbackError::TableMap(_))
        ));
        assert!(matches!(
            FormatTable::from_fd(&memfd, 65537 * 16),
            Err(FeedbackError::TableMap(_))
        ));
    }
}
