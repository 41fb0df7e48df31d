//! Objects that may hear from the compositor after their owner is gone.
//!
//! `wayland-client` queues an object's events on the event queue it was
//! made with, and each queued event holds the object's data, which holds
//! the queue: events that arrive for a queue nobody dispatches any more
//! (its [`Surface`](super::surface::Surface) or
//! [`Presentation`](super::presentation::Presentation) dropped) stay there
//! for the life of the process, with the fds they carry. Some objects do
//! hear after their owner: the release object of a buffer the compositor
//! still holds, the frame callback and the presentation feedback of the
//! last commits, a registry (it has no destructor). Made through an
//! [`Owner`], their events go to the queue only while the owner lives;
//! after [`Owner::leave`] they are dropped as they arrive (their fds
//! closed).

use std::any::Any;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use wayland_client::backend::protocol::Message;
use wayland_client::backend::{Backend, ObjectData, ObjectId};
use wayland_client::protocol::wl_display;
use wayland_client::protocol::wl_registry::WlRegistry;
use wayland_client::{Connection, Dispatch, EventQueue, Proxy, QueueHandle};

/// The owner of a queue's objects: see the [module docs](self). Dropped
/// without [`Owner::leave`] (a failed construction), it still stops the
/// queueing.
#[derive(Debug)]
pub(crate) struct Owner {
    /// Whether the owner still dispatches the queue; held while an event
    /// is queued, so none is queued after [`Owner::leave`].
    live: Arc<Mutex<bool>>,
}

impl Owner {
    /// An owner whose objects' events go to their queue until
    /// [`Owner::leave`].
    pub(crate) fn new() -> Self {
        Owner {
            live: Arc::new(Mutex::new(true)),
        }
    }

    /// The data for a new object of `qh`'s queue (user data `udata`), for
    /// `Proxy::send_constructor`.
    pub(crate) fn data<I, U, S>(&self, qh: &QueueHandle<S>, udata: U) -> Arc<dyn ObjectData>
    where
        I: Proxy + 'static,
        U: Send + Sync + 'static,
        S: Dispatch<I, U> + 'static,
    {
        // A late event dropped must not be one that makes an object (the
        // backend needs data for it): none of the guarded objects has one.
        debug_assert!(I::interface().events.iter().all(|e| e
            .signature
            .iter()
            .all(|a| !matches!(a, wayland_client::backend::protocol::ArgumentType::NewId))));
        Arc::new(Guarded {
            target: qh.make_data::<I, U>(udata),
            live: self.live.clone(),
        })
    }

    /// Make an object of `qh`'s queue with `parent`'s `request` (user
    /// data `udata`). `None`: the parent is gone (its connection too), so
    /// the object would hear nothing anyway.
    pub(crate) fn make<I, P, U, S>(
        &self,
        parent: &P,
        request: P::Request<'_>,
        qh: &QueueHandle<S>,
        udata: U,
    ) -> Option<I>
    where
        I: Proxy + 'static,
        P: Proxy,
        U: Send + Sync + 'static,
        S: Dispatch<I, U> + 'static,
    {
        parent
            .send_constructor(request, self.data::<I, U, S>(qh, udata))
            .ok()
    }

    /// A registry of `conn` on `qh`'s queue (`wl_display.get_registry`;
    /// a registry has no destructor, so it hears of every later global).
    pub(crate) fn registry<S>(
        &self,
        conn: &Connection,
        qh: &QueueHandle<S>,
    ) -> super::Result<WlRegistry>
    where
        S: Dispatch<WlRegistry, ()> + 'static,
    {
        self.make(&conn.display(), wl_display::Request::GetRegistry {}, qh, ())
            .ok_or_else(|| super::Error::Wayland("the connection is gone".into()))
    }

    /// Stop queueing, then dispatch what was queued (into `state`; events
    /// of objects destroyed meanwhile reach their handlers with a dead
    /// proxy, as ever). The queue then holds nothing, provided the
    /// caller destroyed first every object of its own that can still hear
    /// from the compositor.
    pub(crate) fn leave<S: 'static>(&self, queue: &mut EventQueue<S>, state: &mut S) {
        self.stop();
        // A malformed message fails its dispatch, after it was taken off
        // the queue: the loop ends.
        while queue.dispatch_pending(state).is_err() {}
    }

    fn stop(&self) {
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An object's data that forwards to its queue while the owner lives.
struct Guarded {
    /// The queue's own data for the object (`QueueHandle::make_data`).
    target: Arc<dyn ObjectData>,
    /// The owner's flag ([`Owner::leave`]).
    live: Arc<Mutex<bool>>,
}

impl ObjectData for Guarded {
    fn event(
        self: Arc<Self>,
        backend: &Backend,
        msg: Message<ObjectId, OwnedFd>,
    ) -> Option<Arc<dyn ObjectData>> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        // None of the guarded objects' events makes a new object.
        if *live {
            self.target.clone().event(backend, msg)
        } else {
            None
        }
    }

    fn destroyed(&self, id: ObjectId) {
        self.target.destroyed(id);
    }

    fn data_as_any(&self) -> &dyn Any {
        self.target.data_as_any()
    }
}
