//! When frames reach the screen: `wp_presentation` feedback for any
//! `wl_surface`, on a queue of its own.
//!
//! Ask for feedback just before a commit ([`Presentation::request`]); the
//! compositor later says when that content update was presented (on its
//! presentation clock) or that it was discarded (replaced before it was
//! shown). [`Presentation::stats`] sums the answers: presented and
//! discarded counts and the latency from commit to presentation.
//!
//! The swapchain uses it for its own surface
//! ([`Swapchain::presentation`](super::swapchain::Swapchain::presentation));
//! an app presenting through another WSI (Mesa's `VK_KHR_wayland_surface`)
//! can measure its surface the same way, since the feedback request only
//! has to precede the commit:
//!
//! ```no_run
//! # fn demo(conn: &wayland_client::Connection, surface: &wayland_client::protocol::wl_surface::WlSurface) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use winsys::wayland::presentation::Presentation;
//!
//! let mut timer = Presentation::new(conn, surface, Duration::from_secs(5))?
//!     .ok_or("the compositor offers no wp_presentation")?;
//! timer.request()?;            // then commit (e.g. vkQueuePresentKHR)
//! // ... later:
//! let stats = timer.stats()?;
//! println!("{} presented, mean latency {:?}", stats.presented, stats.mean_latency());
//! # Ok(()) }
//! ```

use std::time::Duration;

use rustix::time::{ClockId, Timespec};
use wayland_client::protocol::{wl_registry, wl_surface};
use wayland_client::{Connection, Dispatch, EventQueue, QueueHandle};
use wayland_protocols::wp::presentation_time::client::{
    wp_presentation, wp_presentation_feedback as feedback,
};

use super::owner::Owner;
use super::{roundtrip, Error, Registry, Result};

/// The global bound, and the highest version used.
pub(crate) const GLOBAL: (&str, u32) = ("wp_presentation", 1);

/// What the compositor said about the frames asked about so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresentationStats {
    /// Feedback requests sent.
    pub requested: u64,
    /// Content updates presented.
    pub presented: u64,
    /// Content updates discarded (replaced before they were shown).
    pub discarded: u64,
    /// Presented with zero copy (the compositor scanned the buffer out or
    /// composited from it directly: `ZERO_COPY` flag).
    pub zero_copy: u64,
    /// Sum of the latencies from request (just before the commit) to
    /// presentation, over `presented` frames with a known latency.
    pub latency_total: Duration,
    /// The longest of those latencies.
    pub latency_max: Duration,
    /// Frames whose latency is known (the clock is one this process can
    /// read, and presentation came after the request).
    pub timed: u64,
    /// The output's refresh period, from the last presented frame (`None`:
    /// unknown, or not a fixed rate).
    pub refresh: Option<Duration>,
}

impl PresentationStats {
    /// Mean latency from commit to presentation (`None` before the first
    /// timed frame).
    pub fn mean_latency(&self) -> Option<Duration> {
        (self.timed > 0).then(|| self.latency_total / self.timed as u32)
    }

    /// Requests not answered yet.
    pub fn outstanding(&self) -> u64 {
        self.requested - self.presented - self.discarded
    }
}

#[derive(Default)]
struct State {
    reg: Registry,
    clock: Option<ClockId>,
    stats: PresentationStats,
}

/// `wp_presentation` feedback for one surface: see the [module docs](self).
pub struct Presentation {
    queue: EventQueue<State>,
    state: State,
    qh: QueueHandle<State>,
    wp: wp_presentation::WpPresentation,
    surface: wl_surface::WlSurface,
    /// The feedback objects and the registry hear nothing more on the
    /// queue once this is dropped.
    owner: Owner,
}

impl Presentation {
    /// Feedback for `surface` (of `conn`), or `None` when the compositor
    /// offers no `wp_presentation`. Waits (at most `timeout`) for the
    /// compositor's globals and its presentation clock.
    pub fn new(
        conn: &Connection,
        surface: &wl_surface::WlSurface,
        timeout: Duration,
    ) -> Result<Option<Self>> {
        let mut queue: EventQueue<State> = conn.new_event_queue();
        let qh = queue.handle();
        let mut state = State::default();
        let owner = Owner::new();
        let registry = owner.registry(conn, &qh)?;
        let found = roundtrip(conn, &owner, &mut queue, &mut state, timeout)
            .map(|()| state.reg.global(GLOBAL.0, GLOBAL.1));
        let Some(global) = found.inspect_err(|_| owner.leave(&mut queue, &mut state))? else {
            owner.leave(&mut queue, &mut state);
            return Ok(None);
        };
        Self::bind(
            conn,
            (queue, state, owner),
            &registry,
            global,
            surface,
            timeout,
        )
        .map(Some)
    }

    /// [`Presentation::new`] through `registry`, a registry of `conn` that
    /// lists `global` (`wp_presentation`'s name and version to bind): no
    /// registry and no roundtrip for the globals of its own.
    pub(crate) fn from_global(
        conn: &Connection,
        registry: &wl_registry::WlRegistry,
        global: (u32, u32),
        surface: &wl_surface::WlSurface,
        timeout: Duration,
    ) -> Result<Self> {
        let queue = (conn.new_event_queue(), State::default(), Owner::new());
        Self::bind(conn, queue, registry, global, surface, timeout)
    }

    /// Bind `wp_presentation` onto `queue` and wait for its clock.
    fn bind(
        conn: &Connection,
        (queue, state, owner): (EventQueue<State>, State, Owner),
        registry: &wl_registry::WlRegistry,
        (name, version): (u32, u32),
        surface: &wl_surface::WlSurface,
        timeout: Duration,
    ) -> Result<Self> {
        let qh = queue.handle();
        let wp: wp_presentation::WpPresentation = registry.bind(name, version, &qh, ());
        let mut p = Presentation {
            queue,
            state,
            qh,
            wp,
            surface: surface.clone(),
            owner,
        };
        // The clock_id event follows the bind.
        roundtrip(conn, &p.owner, &mut p.queue, &mut p.state, timeout)?;
        Ok(p)
    }

    /// The compositor's presentation clock, if this process can read it.
    pub fn clock(&self) -> Option<ClockId> {
        self.state.clock
    }

    /// Ask for feedback on the surface's next commit; call it just before
    /// that commit (the request time is the start of the latency).
    pub fn request(&mut self) -> Result<()> {
        self.ask()?;
        self.queue.flush().map_err(Error::wayland)
    }

    /// [`Presentation::request`] without the flush: for a caller whose
    /// commit right after it flushes the connection (one `sendmsg` for
    /// both).
    pub(crate) fn ask(&mut self) -> Result<()> {
        // Answers that arrived meanwhile (read from the socket while the
        // surface's own queue waited) are taken now, so a long run that
        // never asks for the stats does not pile them up.
        self.queue
            .dispatch_pending(&mut self.state)
            .map_err(Error::dispatch)?;
        let asked = self.state.clock.map(rustix::time::clock_gettime);
        let request = wp_presentation::Request::Feedback {
            surface: self.surface.clone(),
        };
        // A connection already gone answers nothing: the request counts as
        // asked, and waits for it end in the connection's error.
        let _: Option<feedback::WpPresentationFeedback> =
            self.owner.make(&self.wp, request, &self.qh, Asked(asked));
        self.state.stats.requested += 1;
        Ok(())
    }

    /// The answers so far (reads what the socket has, never waits).
    pub fn stats(&mut self) -> Result<PresentationStats> {
        self.queue.flush().map_err(Error::wayland)?;
        if let Some(guard) = self.queue.prepare_read() {
            // Nothing to read is not an error.
            if crate::sync::poll_ready(
                guard.connection_fd(),
                rustix::event::PollFlags::IN,
                Some(Duration::ZERO),
            )
            .unwrap_or(false)
            {
                guard.read().map_err(Error::wayland)?;
            }
        }
        self.queue
            .dispatch_pending(&mut self.state)
            .map_err(Error::dispatch)?;
        Ok(self.state.stats)
    }

    /// Take the answers already read from the socket (no read).
    pub(crate) fn dispatch_pending(&mut self) -> Result<()> {
        self.queue
            .dispatch_pending(&mut self.state)
            .map_err(Error::dispatch)
            .map(drop)
    }

    /// The answers already read (no socket read, no dispatch).
    pub fn known(&self) -> PresentationStats {
        self.state.stats
    }

    /// Wait (at most `timeout`) until every request has been answered.
    pub fn wait_all(&mut self, timeout: Duration) -> Result<PresentationStats> {
        let all = self.state.stats.requested;
        self.wait_answered(all, timeout)
    }

    /// Wait (at most `timeout`) until the first `n` requests have been
    /// answered (presented or discarded: the compositor answers a
    /// surface's updates in commit order).
    pub fn wait_answered(&mut self, n: u64, timeout: Duration) -> Result<PresentationStats> {
        super::dispatch_until(
            &mut self.queue,
            &mut self.state,
            "presentation feedback",
            timeout,
            |s| s.stats.presented + s.stats.discarded >= n,
        )?;
        Ok(self.state.stats)
    }
}

impl Drop for Presentation {
    fn drop(&mut self) {
        self.wp.destroy();
        self.owner.leave(&mut self.queue, &mut self.state);
        let _ = self.queue.flush();
    }
}

/// A feedback object's request time (`None`: the clock is unreadable).
struct Asked(Option<Timespec>);

fn duration_between(from: Timespec, to: Timespec) -> Option<Duration> {
    let ns = |t: Timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
    u64::try_from(ns(to) - ns(from))
        .ok()
        .map(Duration::from_nanos)
}

impl Dispatch<feedback::WpPresentationFeedback, Asked> for State {
    fn event(
        state: &mut Self,
        _: &feedback::WpPresentationFeedback,
        event: feedback::Event,
        asked: &Asked,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let s = &mut state.stats;
        match event {
            feedback::Event::Presented {
                tv_sec_hi,
                tv_sec_lo,
                tv_nsec,
                refresh,
                flags,
                ..
            } => {
                s.presented += 1;
                let kind = flags.into_result().unwrap_or(feedback::Kind::empty());
                if kind.contains(feedback::Kind::ZeroCopy) {
                    s.zero_copy += 1;
                }
                s.refresh = (refresh > 0).then(|| Duration::from_nanos(refresh.into()));
                let shown = Timespec {
                    tv_sec: ((u64::from(tv_sec_hi) << 32) | u64::from(tv_sec_lo)) as i64,
                    tv_nsec: tv_nsec.into(),
                };
                if let Some(latency) = asked.0.and_then(|a| duration_between(a, shown)) {
                    s.timed += 1;
                    s.latency_total += latency;
                    s.latency_max = s.latency_max.max(latency);
                }
            }
            feedback::Event::Discarded => s.discarded += 1,
            _ => {}
        }
    }
}

impl Dispatch<wp_presentation::WpPresentation, ()> for State {
    fn event(
        state: &mut Self,
        _: &wp_presentation::WpPresentation,
        event: wp_presentation::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wp_presentation::Event::ClockId { clk_id } = event {
            // A clock id of the kernel's (MONOTONIC in practice).
            state.clock = ClockId::try_from(clk_id as i32).ok();
        }
    }
}

super::registry_state!(State);
