//! What a compositor offers: its globals, the linux-dmabuf feedback (or the
//! v3 format list), and from that the [`Offer`] the sync choice works on.
//! Every wait for the compositor is bounded.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use wayland_client::{Connection, Dispatch, EventQueue, QueueHandle};
use wayland_protocols::wp::linux_dmabuf::zv1::client::{
    zwp_linux_dmabuf_feedback_v1 as feedback_v1, zwp_linux_dmabuf_v1 as dmabuf_v1,
};

use super::feedback::{Feedback, FeedbackBuilder, FeedbackError};
use super::owner::Owner;
use super::sync::Offer;
use super::{roundtrip, Error, Registry, Result};
use crate::format::{Fourcc, Modifier};
use crate::sync::Deadline;

/// Connect to the compositor named `name` (`WAYLAND_DISPLAY` rules: an
/// absolute path, or a name under `$XDG_RUNTIME_DIR`); `None`: the
/// `WAYLAND_DISPLAY` of the environment, else `wayland-0`.
pub fn connect(name: Option<&str>) -> Result<Connection> {
    let name = match name {
        Some(n) => n.to_string(),
        None => std::env::var("WAYLAND_DISPLAY").unwrap_or_else(|_| "wayland-0".into()),
    };
    let path = if name.starts_with('/') {
        PathBuf::from(&name)
    } else {
        let dir = std::env::var_os("XDG_RUNTIME_DIR").ok_or_else(|| Error::Connect {
            socket: name.clone(),
            why: "XDG_RUNTIME_DIR is not set".into(),
        })?;
        PathBuf::from(dir).join(&name)
    };
    let stream = UnixStream::connect(&path).map_err(|e| Error::Connect {
        socket: path.display().to_string(),
        why: e.to_string(),
    })?;
    Connection::from_socket(stream).map_err(|e| Error::Connect {
        socket: path.display().to_string(),
        why: e.to_string(),
    })
}

/// One global of the compositor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalInfo {
    /// Its numeric name (for binding).
    pub name: u32,
    /// The interface, e.g. `zwp_linux_dmabuf_v1`.
    pub interface: String,
    /// The highest version offered.
    pub version: u32,
}

/// What [`probe`] found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every global, in the order announced.
    pub globals: Vec<GlobalInfo>,
    /// The default linux-dmabuf feedback (version 4+), or why it was
    /// malformed; `None` below version 4.
    pub feedback: Option<std::result::Result<Feedback, FeedbackError>>,
    /// The format + modifier pairs a version 3 linux-dmabuf announced.
    pub formats_v3: Vec<(Fourcc, Modifier)>,
}

impl Report {
    /// The version of `interface`, if offered.
    pub fn version(&self, interface: &str) -> Option<u32> {
        self.globals
            .iter()
            .filter(|g| g.interface == interface)
            .map(|g| g.version)
            .max()
    }

    /// The protocols the sync choice looks at.
    pub fn offer(&self) -> Offer {
        Offer {
            linux_dmabuf: self.version("zwp_linux_dmabuf_v1"),
            drm_syncobj: self.version("wp_linux_drm_syncobj_manager_v1"),
            explicit_sync: self.version("zwp_linux_explicit_synchronization_v1"),
            shm: self.version("wl_shm"),
        }
    }
}

/// The probe's event state.
#[derive(Default)]
struct Probe {
    reg: Registry,
    builder: FeedbackBuilder,
    feedback: Option<std::result::Result<Feedback, FeedbackError>>,
    formats_v3: Vec<(Fourcc, Modifier)>,
}

/// Ask the compositor behind `conn` what it offers: globals, then the
/// linux-dmabuf feedback (version 4+; version 3: its format events), each
/// answer awaited at most `timeout` ([`Error::Timeout`]).
pub fn probe(conn: &Connection, timeout: Duration) -> Result<Report> {
    let mut queue: EventQueue<Probe> = conn.new_event_queue();
    let mut state = Probe::default();
    let owner = Owner::new();
    let asked = ask(conn, &mut queue, &mut state, &owner, timeout);
    // The queue goes with this call: nothing more is queued on it, and
    // what was is taken.
    owner.leave(&mut queue, &mut state);
    // The destroy requests go out on every path.
    let flushed = conn.flush();
    asked?;
    flushed.map_err(Error::wayland)?;
    Ok(Report {
        globals: state.reg.globals,
        feedback: state.feedback,
        formats_v3: state.formats_v3,
    })
}

/// [`probe`]'s questions, answered into `state`.
fn ask(
    conn: &Connection,
    queue: &mut EventQueue<Probe>,
    state: &mut Probe,
    owner: &Owner,
    timeout: Duration,
) -> Result<()> {
    let qh = queue.handle();
    let registry = owner.registry(conn, &qh)?;
    roundtrip(conn, owner, queue, state, timeout)?;
    if let Some((name, version)) = state.reg.global("zwp_linux_dmabuf_v1", 5) {
        let proxy: dmabuf_v1::ZwpLinuxDmabufV1 = registry.bind(name, version, &qh, ());
        if version >= 4 {
            let fb = proxy.get_default_feedback(&qh, ());
            let deadline = Deadline::after(Some(timeout));
            let answered = (|| {
                while state.feedback.is_none() {
                    let left = deadline.remaining().unwrap_or(timeout);
                    if left.is_zero() {
                        return Err(Error::Timeout {
                            what: "linux-dmabuf default feedback",
                            timeout,
                        });
                    }
                    roundtrip(conn, owner, queue, state, left)?;
                }
                Ok(())
            })();
            // Destroyed on every path: a late answer must not reach a
            // queue that is gone.
            fb.destroy();
            proxy.destroy();
            answered?;
        } else {
            let answered = roundtrip(conn, owner, queue, state, timeout);
            proxy.destroy();
            answered?;
        }
    }
    Ok(())
}

impl Dispatch<dmabuf_v1::ZwpLinuxDmabufV1, ()> for Probe {
    fn event(
        state: &mut Self,
        _: &dmabuf_v1::ZwpLinuxDmabufV1,
        event: dmabuf_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            dmabuf_v1::Event::Format { format } => {
                state.formats_v3.push((Fourcc(format), Modifier::INVALID))
            }
            dmabuf_v1::Event::Modifier {
                format,
                modifier_hi,
                modifier_lo,
            } => state.formats_v3.push((
                Fourcc(format),
                Modifier(((modifier_hi as u64) << 32) | modifier_lo as u64),
            )),
            _ => {}
        }
    }
}

impl Dispatch<feedback_v1::ZwpLinuxDmabufFeedbackV1, ()> for Probe {
    fn event(
        state: &mut Self,
        _: &feedback_v1::ZwpLinuxDmabufFeedbackV1,
        event: feedback_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let Some(done) = state.builder.feed(event) {
            state.feedback = Some(done);
        }
    }
}

super::registry_state!(Probe);
