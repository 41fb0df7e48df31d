//! The compositor's side of linux-dmabuf feedback: one deduplicated format
//! table in a sealed memfd, and tranches that name its entries.
//!
//! The table is written once and sealed (`F_SEAL_WRITE | F_SEAL_SHRINK |
//! F_SEAL_GROW | F_SEAL_SEAL`): no one, the compositor included, can change
//! it after it was sent, so a client may map it without fearing SIGBUS or a
//! moving target. New feedback (a surface gains a scanout tranche, a device
//! goes away) is a new [`DmabufFeedback`] with a new table.
//!
//! Version-aware: [`DmabufFeedback::legacy_events`] gives what a client
//! bound below version 4 gets instead of the table (`modifier` events from
//! version 3, `format` events before).
//!
//! ```no_run
//! use winsys::format::{Fourcc, Modifier};
//! use winsys::server::feedback::{FeedbackBuilder, TrancheFlags};
//!
//! let main_device = 0xe280; // dev_t of the render node the compositor uses
//! let mut b = FeedbackBuilder::new(main_device);
//! b.tranche(main_device, TrancheFlags::empty(), [
//!     (Fourcc::XRGB8888, Modifier::LINEAR),
//!     (Fourcc::ARGB8888, Modifier::LINEAR),
//! ]);
//! let feedback = b.build()?;
//! // send format_table(feedback.table_fd(), feedback.table_size()),
//! // main_device(&feedback.main_device_bytes()), then per tranche
//! // tranche_target_device, tranche_formats(&t.index_bytes()), tranche_flags,
//! // tranche_done; then done.
//! assert_eq!(feedback.table_size(), 32);
//! # Ok::<(), winsys::server::Error>(())
//! ```

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;

use super::{Error, Result};
use crate::format::{Fourcc, Modifier};

/// Bytes per format table entry (`u32 format, u32 padding, u64 modifier`).
pub const ENTRY_SIZE: usize = 16;
/// Most entries a table may have: tranches name them with `u16` indices.
pub const MAX_ENTRIES: usize = 1 << 16;

/// `zwp_linux_dmabuf_feedback_v1.tranche_flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrancheFlags(pub u32);

impl TrancheFlags {
    /// `scanout`: buffers of this tranche can go to a display plane.
    pub const SCANOUT: TrancheFlags = TrancheFlags(1);

    /// No flags.
    pub fn empty() -> Self {
        TrancheFlags(0)
    }
}

/// One tranche: a target device, flags, and indices into the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tranche {
    /// `dev_t` of the device buffers of this tranche are used on.
    pub target_device: u64,
    /// Flags.
    pub flags: TrancheFlags,
    /// Table entries, in preference order, each once.
    pub indices: Vec<u16>,
}

impl Tranche {
    /// The `tranche_formats` array (native-endian `u16`s).
    pub fn index_bytes(&self) -> Vec<u8> {
        self.indices.iter().flat_map(|i| i.to_ne_bytes()).collect()
    }

    /// The `tranche_target_device` array (a native-endian `dev_t`).
    pub fn target_device_bytes(&self) -> [u8; 8] {
        self.target_device.to_ne_bytes()
    }
}

/// Collects tranches; [`FeedbackBuilder::build`] writes the table.
#[derive(Debug, Clone)]
pub struct FeedbackBuilder {
    main_device: u64,
    entries: Vec<(Fourcc, Modifier)>,
    index: HashMap<(Fourcc, Modifier), u16>,
    tranches: Vec<Tranche>,
    overflow: bool,
}

impl FeedbackBuilder {
    /// Feedback whose main device (where the compositor allocates and
    /// composites) has `dev_t` `main_device`.
    pub fn new(main_device: u64) -> Self {
        FeedbackBuilder {
            main_device,
            entries: Vec::new(),
            index: HashMap::new(),
            tranches: Vec::new(),
            overflow: false,
        }
    }

    /// Add a tranche, most preferred first. Pairs already in the table
    /// are named by their existing entry; a pair repeated within the
    /// tranche is named once.
    pub fn tranche(
        &mut self,
        target_device: u64,
        flags: TrancheFlags,
        pairs: impl IntoIterator<Item = (Fourcc, Modifier)>,
    ) -> &mut Self {
        let mut indices = Vec::new();
        let mut named = std::collections::HashSet::new();
        for pair in pairs {
            let i = match self.index.get(&pair) {
                Some(i) => *i,
                None => {
                    let Ok(i) = u16::try_from(self.entries.len()) else {
                        self.overflow = true;
                        continue;
                    };
                    self.entries.push(pair);
                    self.index.insert(pair, i);
                    i
                }
            };
            if named.insert(i) {
                indices.push(i);
            }
        }
        self.tranches.push(Tranche {
            target_device,
            flags,
            indices,
        });
        self
    }

    /// Write the table into a sealed memfd.
    pub fn build(&self) -> Result<DmabufFeedback> {
        if self.overflow {
            return Err(Error::Invalid(format!(
                "more than {MAX_ENTRIES} distinct format + modifier pairs"
            )));
        }
        if self.tranches.iter().all(|t| t.indices.is_empty()) {
            return Err(Error::Invalid("feedback without any format".into()));
        }
        let mut bytes = Vec::with_capacity(self.entries.len() * ENTRY_SIZE);
        for (format, modifier) in &self.entries {
            bytes.extend_from_slice(&format.0.to_ne_bytes());
            bytes.extend_from_slice(&0u32.to_ne_bytes());
            bytes.extend_from_slice(&modifier.0.to_ne_bytes());
        }
        let table = sealed_memfd("winsys-dmabuf-formats", &bytes)?;
        Ok(DmabufFeedback {
            table,
            main_device: self.main_device,
            entries: self.entries.clone(),
            tranches: self
                .tranches
                .iter()
                .filter(|t| !t.indices.is_empty())
                .cloned()
                .collect(),
        })
    }
}

/// A memfd holding `bytes`, sealed against every change.
fn sealed_memfd(name: &str, bytes: &[u8]) -> Result<OwnedFd> {
    let os = |op: &'static str| move |errno: Errno| Error::Os { op, errno };
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(os("memfd_create"))?;
    let mut done = 0;
    while done < bytes.len() {
        done += rustix::io::write(&fd, &bytes[done..]).map_err(os("write(memfd)"))?;
    }
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
    )
    .map_err(os("fcntl(F_ADD_SEALS)"))?;
    Ok(fd)
}

/// The format + modifier pairs `device` can import with every feature in
/// `needs` (what a compositor compositing with it offers in its main
/// tranche), in the order of `formats`, each format's modifiers in the
/// driver's order.
///
/// ```no_run
/// use winsys::format::Fourcc;
/// use winsys::server::feedback::{vulkan_importable, FeedbackBuilder, TrancheFlags};
/// use winsys::vulkan::{ash::vk, Device, Instance};
///
/// let device = Device::open(&Instance::new()?)?;
/// let pairs = vulkan_importable(&device, &[Fourcc::XRGB8888], vk::FormatFeatureFlags::SAMPLED_IMAGE);
/// let mut b = FeedbackBuilder::new(0xe280);
/// b.tranche(0xe280, TrancheFlags::empty(), pairs);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "vulkan")]
pub fn vulkan_importable(
    device: &crate::vulkan::Device,
    formats: &[Fourcc],
    needs: ash::vk::FormatFeatureFlags,
) -> Vec<(Fourcc, Modifier)> {
    formats
        .iter()
        .flat_map(|&format| {
            device
                .modifiers(format)
                .unwrap_or_default()
                .into_iter()
                .filter(move |m| m.features.contains(needs))
                .map(move |m| (format, m.modifier))
        })
        .collect()
}

/// Feedback ready to send: a sealed table and its tranches.
#[derive(Debug)]
pub struct DmabufFeedback {
    table: OwnedFd,
    main_device: u64,
    entries: Vec<(Fourcc, Modifier)>,
    tranches: Vec<Tranche>,
}

/// What a client bound below version 4 gets instead of feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyEvent {
    /// `zwp_linux_dmabuf_v1.format` (versions 1 and 2).
    Format(Fourcc),
    /// `zwp_linux_dmabuf_v1.modifier` (version 3).
    Modifier(Fourcc, Modifier),
}

impl DmabufFeedback {
    /// The table's fd, for `format_table` (the same fd for every client;
    /// each gets its own dup through the socket).
    pub fn table_fd(&self) -> BorrowedFd<'_> {
        self.table.as_fd()
    }

    /// The table's size in bytes, for `format_table`.
    pub fn table_size(&self) -> u32 {
        (self.entries.len() * ENTRY_SIZE) as u32
    }

    /// The main device's `dev_t`.
    pub fn main_device(&self) -> u64 {
        self.main_device
    }

    /// The `main_device` array (a native-endian `dev_t`).
    pub fn main_device_bytes(&self) -> [u8; 8] {
        self.main_device.to_ne_bytes()
    }

    /// The tranches, most preferred first (empty ones left out).
    pub fn tranches(&self) -> &[Tranche] {
        &self.tranches
    }

    /// The table's entries, in index order.
    pub fn entries(&self) -> &[(Fourcc, Modifier)] {
        &self.entries
    }

    /// Whether some tranche offers `format` with `modifier`: what
    /// linux-dmabuf version 4+ must check at `create` (pass this to
    /// [`Params::create`](super::params::Params::create)).
    pub fn advertises(&self, format: Fourcc, modifier: Modifier) -> bool {
        self.entries.contains(&(format, modifier))
    }

    /// The events a client bound at `version` (1..=3) gets in place of
    /// feedback, each pair once: `modifier` events from version 3,
    /// `format` events (one per format) before. Empty from version 4,
    /// where feedback is sent instead.
    pub fn legacy_events(&self, version: u32) -> Vec<LegacyEvent> {
        let mut out = Vec::new();
        match version {
            0..=2 => {
                for (format, _) in &self.entries {
                    let e = LegacyEvent::Format(*format);
                    if !out.contains(&e) {
                        out.push(e);
                    }
                }
            }
            3 => {
                out.extend(
                    self.entries
                        .iter()
                        .map(|(f, m)| LegacyEvent::Modifier(*f, *m)),
                );
            }
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Y_TILED: Modifier = Modifier((1 << 56) | 2);

    #[test]
    fn the_table_is_deduplicated_and_tranches_name_entries() {
        let mut b = FeedbackBuilder::new(7);
        b.tranche(
            9,
            TrancheFlags::SCANOUT,
            [
                (Fourcc::XRGB8888, Y_TILED),
                (Fourcc::XRGB8888, Y_TILED),
                (Fourcc::XRGB8888, Modifier::LINEAR),
            ],
        );
        b.tranche(
            7,
            TrancheFlags::empty(),
            [
                (Fourcc::XRGB8888, Modifier::LINEAR),
                (Fourcc::ARGB8888, Modifier::LINEAR),
            ],
        );
        b.tranche(7, TrancheFlags::empty(), []);
        let f = b.build().unwrap();
        assert_eq!(f.entries().len(), 3);
        assert_eq!(f.table_size(), 48);
        assert_eq!(f.tranches().len(), 2, "the empty tranche is left out");
        assert_eq!(f.tranches()[0].indices, vec![0, 1]);
        assert_eq!(f.tranches()[1].indices, vec![1, 2]);
        assert_eq!(
            f.tranches()[1].index_bytes(),
            [1u16.to_ne_bytes(), 2u16.to_ne_bytes()].concat()
        );
        assert_eq!(f.main_device_bytes(), 7u64.to_ne_bytes());
        assert!(f.advertises(Fourcc::ARGB8888, Modifier::LINEAR));
        assert!(!f.advertises(Fourcc::ARGB8888, Y_TILED));
    }

    /// The client side's own parser reads back what was put in.
    #[cfg(feature = "wayland")]
    #[test]
    fn the_client_parser_reads_the_table_back() {
        use crate::wayland::feedback::FormatTable;
        let mut b = FeedbackBuilder::new(7);
        let pairs = [
            (Fourcc::XRGB8888, Y_TILED),
            (Fourcc::NV12, Modifier::LINEAR),
        ];
        b.tranche(7, TrancheFlags::empty(), pairs);
        let f = b.build().unwrap();
        let table = FormatTable::from_fd(f.table_fd(), f.table_size()).unwrap();
        assert_eq!(table.len(), 2);
        for (i, pair) in pairs.iter().enumerate() {
            assert_eq!(table.get(i as u16), Some(*pair));
        }
    }

    #[test]
    fn the_table_memfd_is_sealed_against_every_change() {
        let mut b = FeedbackBuilder::new(1);
        b.tranche(
            1,
            TrancheFlags::empty(),
            [(Fourcc::XRGB8888, Modifier::LINEAR)],
        );
        let f = b.build().unwrap();
        let seals = rustix::fs::fcntl_get_seals(f.table_fd()).unwrap();
        let all = SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
        assert!(seals.contains(all), "{seals:?}");
        assert_eq!(rustix::io::pwrite(f.table_fd(), &[0], 0), Err(Errno::PERM));
        assert_eq!(rustix::fs::ftruncate(f.table_fd(), 0), Err(Errno::PERM));
        assert_eq!(rustix::fs::ftruncate(f.table_fd(), 4096), Err(Errno::PERM));
    }

    #[test]
    fn legacy_versions_get_format_or_modifier_events() {
        let mut b = FeedbackBuilder::new(1);
        b.tranche(
            1,
            TrancheFlags::empty(),
            [
                (Fourcc::XRGB8888, Modifier::LINEAR),
                (Fourcc::XRGB8888, Y_TILED),
                (Fourcc::ARGB8888, Modifier::LINEAR),
            ],
        );
        let f = b.build().unwrap();
        assert_eq!(
            f.legacy_events(2),
            vec![
                LegacyEvent::Format(Fourcc::XRGB8888),
                LegacyEvent::Format(Fourcc::ARGB8888)
            ]
        );
        assert_eq!(f.legacy_events(3).len(), 3);
        assert!(f.legacy_events(4).is_empty());
    }

    #[test]
    fn feedback_without_formats_or_with_too_many_is_refused() {
        let mut b = FeedbackBuilder::new(1);
        b.tranche(1, TrancheFlags::empty(), []);
        assert!(matches!(b.build(), Err(Error::Invalid(_))));
        let mut b = FeedbackBuilder::new(1);
        b.tranche(
            1,
            TrancheFlags::empty(),
            (0..=MAX_ENTRIES as u64).map(|m| (Fourcc::XRGB8888, Modifier(m))),
        );
        assert!(matches!(b.build(), Err(Error::Invalid(_))));
    }
}
