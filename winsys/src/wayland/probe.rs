//! What a compositor offers: its globals, the linux-dmabuf feedback (or the
//! v3 format list), its wl_shm formats, and from that the [`Offer`] the
//! sync choice works on and the formats each way of sharing buffers takes.
//! Every wait for the compositor is bounded.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use wayland_client::protocol::wl_shm;
use wayland_client::{Connection, Dispatch, EventQueue, QueueHandle, WEnum};
use wayland_protocols::wp::linux_dmabuf::zv1::client::{
    zwp_linux_dmabuf_feedback_v1 as feedback_v1, zwp_linux_dmabuf_v1 as dmabuf_v1,
};

use super::feedback::{Feedback, FeedbackBuilder, FeedbackError};
use super::owner::Owner;
use super::sync::{Offer, SyncMode};
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
    /// The formats wl_shm takes: those it announced (version 2 and up,
    /// whose object can be released again), else the two every wl_shm
    /// takes (`ARGB8888`, `XRGB8888`); empty without wl_shm.
    pub shm_formats: Vec<Fourcc>,
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

    /// The explicit modifiers the compositor takes for `format` on the way
    /// `mode` shares buffers, in its order of preference: `LINEAR` on
    /// wl_shm (where it takes the format), else every tranche's of the
    /// feedback (version 3: its format list). Empty when it takes none.
    pub fn modifiers(
        &self,
        mode: SyncMode,
        format: Fourcc,
    ) -> std::result::Result<Vec<Modifier>, FeedbackError> {
        let offered = match &self.feedback {
            _ if mode == SyncMode::Shm => match self.shm_formats.contains(&format) {
                true => vec![Modifier::LINEAR],
                false => Vec::new(),
            },
            Some(Ok(fb)) => fb.modifiers(format),
            Some(Err(e)) => return Err(e.clone()),
            None => self
                .formats_v3
                .iter()
                .filter(|(f, _)| *f == format)
                .map(|(_, m)| *m)
                .collect(),
        };
        Ok(offered
            .into_iter()
            .filter(|m| *m != Modifier::INVALID)
            .collect())
    }

    /// Every format the compositor takes on the way `mode` shares buffers
    /// (with at least one explicit modifier on linux-dmabuf), each once,
    /// in the order announced.
    pub fn formats(&self, mode: SyncMode) -> std::result::Result<Vec<Fourcc>, FeedbackError> {
        let pairs: Vec<(Fourcc, Modifier)> = match &self.feedback {
            _ if mode == SyncMode::Shm => {
                return Ok(self.shm_formats.clone());
            }
            Some(Ok(fb)) => fb.tranches.iter().flat_map(|t| t.formats.clone()).collect(),
            Some(Err(e)) => return Err(e.clone()),
            None => self.formats_v3.clone(),
        };
        let mut out: Vec<Fourcc> = Vec::new();
        for (f, m) in pairs {
            if m != Modifier::INVALID && !out.contains(&f) {
                out.push(f);
            }
        }
        Ok(out)
    }
}

/// The probe's event state.
#[derive(Default)]
struct Probe {
    reg: Registry,
    builder: FeedbackBuilder,
    feedback: Option<std::result::Result<Feedback, FeedbackError>>,
    formats_v3: Vec<(Fourcc, Modifier)>,
    shm_formats: Vec<Fourcc>,
}

/// Ask the compositor behind `conn` what it offers: globals, then the
/// linux-dmabuf feedback (version 4+; version 3: its format events) and
/// the wl_shm formats, each answer awaited at most `timeout`
/// ([`Error::Timeout`]).
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
        shm_formats: state.shm_formats,
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
    // wl_shm's formats come with the roundtrips below. Version 1 has no
    // destructor: not bound (it would stay on the compositor), its two
    // required formats taken as its list.
    let shm = match state.reg.global("wl_shm", 2) {
        Some((name, 2)) => Some(registry.bind::<wl_shm::WlShm, _, _>(name, 2, &qh, ())),
        Some(_) => {
            state.shm_formats = vec![Fourcc::ARGB8888, Fourcc::XRGB8888];
            None
        }
        None => None,
    };
    let asked = ask_dmabuf(conn, queue, state, owner, &registry, timeout);
    let answered = match (&shm, &asked) {
        // Nothing was asked of linux-dmabuf: wl_shm's formats still are.
        (Some(_), Ok(false)) => roundtrip(conn, owner, queue, state, timeout),
        _ => Ok(()),
    };
    if let Some(shm) = shm {
        shm.release();
    }
    asked?;
    answered
}

/// The linux-dmabuf half of [`ask`]: `Ok(true)` when the compositor
/// offers it (and answered).
fn ask_dmabuf(
    conn: &Connection,
    queue: &mut EventQueue<Probe>,
    state: &mut Probe,
    owner: &Owner,
    registry: &wayland_client::protocol::wl_registry::WlRegistry,
    timeout: Duration,
) -> Result<bool> {
    let qh = queue.handle();
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
        return Ok(true);
    }
    Ok(false)
}

impl Dispatch<wl_shm::WlShm, ()> for Probe {
    fn event(
        state: &mut Self,
        _: &wl_shm::WlShm,
        event: wl_shm::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_shm::Event::Format { format } = event {
            let code = match format {
                WEnum::Value(wl_shm::Format::Argb8888) => Fourcc::ARGB8888.0,
                WEnum::Value(wl_shm::Format::Xrgb8888) => Fourcc::XRGB8888.0,
                WEnum::Value(f) => f as u32,
                WEnum::Unknown(raw) => raw,
            };
            if !state.shm_formats.contains(&Fourcc(code)) {
                state.shm_formats.push(Fourcc(code));
            }
        }
    }
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
