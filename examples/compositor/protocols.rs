//! The compositor's globals and their requests: one `Dispatch` per
//! protocol object, all state in [`State`]. Buffers and sync go through
//! `winsys::server` only: params checks, the syncobj commit rules, the
//! feedback table, acquire gates and release trackers.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use wayland_protocols::wp::linux_dmabuf::zv1::server::{
    zwp_linux_buffer_params_v1 as params_v1, zwp_linux_dmabuf_feedback_v1 as feedback_v1,
    zwp_linux_dmabuf_v1 as dmabuf_v1,
};
use wayland_protocols::wp::linux_drm_syncobj::v1::server::{
    wp_linux_drm_syncobj_manager_v1 as syncobj_manager,
    wp_linux_drm_syncobj_surface_v1 as syncobj_surface,
    wp_linux_drm_syncobj_timeline_v1 as syncobj_timeline,
};
use wayland_protocols::wp::linux_explicit_synchronization::zv1::server::{
    zwp_linux_buffer_release_v1 as buffer_release,
    zwp_linux_explicit_synchronization_v1 as explicit_v1,
    zwp_linux_surface_synchronization_v1 as surface_sync,
};
use wayland_protocols::wp::presentation_time::server::{wp_presentation, wp_presentation_feedback};
use wayland_protocols::xdg::shell::server::{xdg_surface, xdg_toplevel, xdg_wm_base};
use wayland_server::protocol::{
    wl_buffer, wl_callback, wl_compositor, wl_region, wl_shm, wl_shm_pool, wl_surface,
};
use wayland_server::{
    Client, DataInit, Dispatch, DisplayHandle, GlobalDispatch, New, Resource, WEnum,
};
use winsys::server::params::{Create, Params};
use winsys::server::syncobj::{check_commit, check_point_request, Attached, Commit};
use winsys::sync::{SyncFile, Syncobj};

use crate::{Buffer, NewContent, ShmBuffer, ShmPool, State, Surf};

/// Send the feedback (format table, main device, tranches) to `fb`.
pub fn send_feedback(state: &State, fb: &feedback_v1::ZwpLinuxDmabufFeedbackV1) {
    let f = &state.feedback;
    fb.format_table(f.table_fd(), f.table_size());
    fb.main_device(f.main_device_bytes().to_vec());
    for t in f.tranches() {
        fb.tranche_target_device(t.target_device_bytes().to_vec());
        fb.tranche_formats(t.index_bytes());
        fb.tranche_flags(feedback_v1::TrancheFlags::from_bits_truncate(t.flags.0));
        fb.tranche_done();
    }
    fb.done();
}

/// Objects whose requests ask nothing of the compositor (destructors,
/// hints it does not use).
macro_rules! ignore_requests {
    ($($iface:ty => $data:ty),+ $(,)?) => {$(
        impl Dispatch<$iface, $data> for State {
            fn request(
                _: &mut Self,
                _: &Client,
                _: &$iface,
                _: <$iface as Resource>::Request,
                _: &$data,
                _: &DisplayHandle,
                _: &mut DataInit<'_, Self>,
            ) {
            }
        }
    )+};
}

/// Globals whose bind only makes the object.
macro_rules! plain_globals {
    ($($iface:ty),+ $(,)?) => {$(
        impl GlobalDispatch<$iface, ()> for State {
            fn bind(
                _: &mut Self,
                _: &DisplayHandle,
                _: &Client,
                resource: New<$iface>,
                _: &(),
                init: &mut DataInit<'_, Self>,
            ) {
                init.init(resource, ());
            }
        }
    )+};
}

ignore_requests!(
    wl_region::WlRegion => (),
    wl_callback::WlCallback => (),
    wl_buffer::WlBuffer => Buffer,
    feedback_v1::ZwpLinuxDmabufFeedbackV1 => (),
    syncobj_timeline::WpLinuxDrmSyncobjTimelineV1 => Timeline,
    buffer_release::ZwpLinuxBufferReleaseV1 => (),
    wp_presentation_feedback::WpPresentationFeedback => (),
);

plain_globals!(
    wl_compositor::WlCompositor,
    xdg_wm_base::XdgWmBase,
    syncobj_manager::WpLinuxDrmSyncobjManagerV1,
    explicit_v1::ZwpLinuxExplicitSynchronizationV1,
);

// ---- wl_compositor, wl_surface, wl_region, wl_callback ----

impl Dispatch<wl_compositor::WlCompositor, ()> for State {
    fn request(
        state: &mut Self,
        _: &Client,
        _: &wl_compositor::WlCompositor,
        request: wl_compositor::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        match request {
            wl_compositor::Request::CreateSurface { id } => {
                let surface = init.init(id, ());
                state.surfaces.insert(surface.id(), Surf::default());
            }
            wl_compositor::Request::CreateRegion { id } => {
                init.init(id, ());
            }
            _ => {}
        }
    }
}

impl Dispatch<wl_surface::WlSurface, ()> for State {
    fn request(
        state: &mut Self,
        _: &Client,
        surface: &wl_surface::WlSurface,
        request: wl_surface::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        let Some(surf) = state.surfaces.get_mut(&surface.id()) else {
            return;
        };
        match request {
            wl_surface::Request::Attach { buffer, .. } => surf.pending.attach = Some(buffer),
            wl_surface::Request::Frame { callback } => {
                surf.pending.frames.push(init.init(callback, ()));
            }
            wl_surface::Request::Commit => state.commit(&surface.id()),
            _ => {}
        }
    }

    fn destroyed(
        state: &mut Self,
        _: wayland_server::backend::ClientId,
        surface: &wl_surface::WlSurface,
        _: &(),
    ) {
        state.remove_surface(&surface.id());
    }
}

// ---- wl_shm ----

impl GlobalDispatch<wl_shm::WlShm, ()> for State {
    fn bind(
        _: &mut Self,
        _: &DisplayHandle,
        _: &Client,
        resource: New<wl_shm::WlShm>,
        _: &(),
        init: &mut DataInit<'_, Self>,
    ) {
        let shm = init.init(resource, ());
        shm.format(wl_shm::Format::Argb8888);
        shm.format(wl_shm::Format::Xrgb8888);
    }
}

impl Dispatch<wl_shm::WlShm, ()> for State {
    fn request(
        _: &mut Self,
        _: &Client,
        shm: &wl_shm::WlShm,
        request: wl_shm::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        if let wl_shm::Request::CreatePool { id, fd, size } = request {
            if size <= 0 {
                shm.post_error(wl_shm::Error::InvalidStride, format!("pool size {size}"));
                return;
            }
            init.init(
                id,
                Arc::new(ShmPool {
                    fd,
                    size: Mutex::new(size),
                }),
            );
        }
    }
}

impl Dispatch<wl_shm_pool::WlShmPool, Arc<ShmPool>> for State {
    fn request(
        _: &mut Self,
        _: &Client,
        pool_res: &wl_shm_pool::WlShmPool,
        request: wl_shm_pool::Request,
        pool: &Arc<ShmPool>,
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        match request {
            wl_shm_pool::Request::CreateBuffer {
                id,
                offset,
                width,
                height,
                stride,
                format,
            } => {
                let size = *pool.size.lock().unwrap() as i64;
                let ok_format = matches!(
                    format,
                    WEnum::Value(wl_shm::Format::Argb8888 | wl_shm::Format::Xrgb8888)
                );
                let (o, w, h, s) = (offset as i64, width as i64, height as i64, stride as i64);
                let fits = o >= 0 && w > 0 && h > 0 && s >= w * 4 && o + s * h <= size;
                let buffer = init.init(
                    id,
                    Buffer::Shm(ShmBuffer {
                        pool: pool.clone(),
                        offset: offset.max(0) as u64,
                        width: width.max(0) as u32,
                        height: height.max(0) as u32,
                        stride: stride.max(0) as u32,
                    }),
                );
                if !ok_format {
                    pool_res.post_error(wl_shm::Error::InvalidFormat, "format not offered");
                } else if !fits {
                    pool_res.post_error(
                        wl_shm::Error::InvalidStride,
                        format!(
                            "{width}x{height} stride {stride} at {offset} outside a pool of {size}"
                        ),
                    );
                }
                let _ = buffer;
            }
            wl_shm_pool::Request::Resize { size } => {
                let mut s = pool.size.lock().unwrap();
                if size < *s {
                    pool_res.post_error(wl_shm::Error::InvalidFd, "a pool cannot shrink");
                } else {
                    *s = size;
                }
            }
            _ => {}
        }
    }
}

// ---- xdg-shell ----

impl Dispatch<xdg_wm_base::XdgWmBase, ()> for State {
    fn request(
        _: &mut Self,
        _: &Client,
        _: &xdg_wm_base::XdgWmBase,
        request: xdg_wm_base::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        if let xdg_wm_base::Request::GetXdgSurface { id, surface } = request {
            init.init(id, surface);
        }
    }
}

impl Dispatch<xdg_surface::XdgSurface, wl_surface::WlSurface> for State {
    fn request(
        state: &mut Self,
        _: &Client,
        xdg: &xdg_surface::XdgSurface,
        request: xdg_surface::Request,
        surface: &wl_surface::WlSurface,
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        if let xdg_surface::Request::GetToplevel { id } = request {
            let toplevel = init.init(id, surface.clone());
            if let Some(surf) = state.surfaces.get_mut(&surface.id()) {
                surf.xdg = Some((xdg.clone(), toplevel));
                state.toplevels.push(surface.id());
            }
        }
    }
}

impl Dispatch<xdg_toplevel::XdgToplevel, wl_surface::WlSurface> for State {
    fn request(
        _: &mut Self,
        _: &Client,
        _: &xdg_toplevel::XdgToplevel,
        _: xdg_toplevel::Request,
        _: &wl_surface::WlSurface,
        _: &DisplayHandle,
        _: &mut DataInit<'_, Self>,
    ) {
    }

    fn destroyed(
        state: &mut Self,
        _: wayland_server::backend::ClientId,
        _: &xdg_toplevel::XdgToplevel,
        surface: &wl_surface::WlSurface,
    ) {
        state.toplevels.retain(|id| *id != surface.id());
        if let Some(surf) = state.surfaces.get_mut(&surface.id()) {
            surf.xdg = None;
        }
    }
}

// ---- linux-dmabuf ----

impl GlobalDispatch<dmabuf_v1::ZwpLinuxDmabufV1, ()> for State {
    fn bind(
        state: &mut Self,
        _: &DisplayHandle,
        _: &Client,
        resource: New<dmabuf_v1::ZwpLinuxDmabufV1>,
        _: &(),
        init: &mut DataInit<'_, Self>,
    ) {
        let dmabuf = init.init(resource, ());
        for event in state.feedback.legacy_events(dmabuf.version()) {
            match event {
                winsys::server::feedback::LegacyEvent::Format(f) => dmabuf.format(f.0),
                winsys::server::feedback::LegacyEvent::Modifier(f, m) => {
                    dmabuf.modifier(f.0, (m.0 >> 32) as u32, m.0 as u32)
                }
            }
        }
    }
}

impl Dispatch<dmabuf_v1::ZwpLinuxDmabufV1, ()> for State {
    fn request(
        state: &mut Self,
        client: &Client,
        dmabuf: &dmabuf_v1::ZwpLinuxDmabufV1,
        request: dmabuf_v1::Request,
        _: &(),
        dh: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        match request {
            dmabuf_v1::Request::CreateParams { params_id } => {
                init.init(
                    params_id,
                    Mutex::new(Params::<OwnedFd>::new(dmabuf.version())),
                );
            }
            dmabuf_v1::Request::GetDefaultFeedback { id } => {
                let fb = init.init(id, ());
                // A WSI asking what its window may present in (a client
                // with a surface), not a probe.
                let windowed = state.surfaces.keys().any(|s| {
                    dh.get_client(s.clone())
                        .is_ok_and(|c| c.id() == client.id())
                });
                if windowed {
                    state.stall_at(crate::StallPoint::DefaultFeedback);
                }
                send_feedback(state, &fb);
            }
            dmabuf_v1::Request::GetSurfaceFeedback { id, .. } => {
                let fb = init.init(id, ());
                send_feedback(state, &fb);
                state.surface_feedbacks.push(fb);
            }
            _ => {}
        }
    }
}

impl Dispatch<params_v1::ZwpLinuxBufferParamsV1, Mutex<Params<OwnedFd>>> for State {
    fn request(
        state: &mut Self,
        client: &Client,
        res: &params_v1::ZwpLinuxBufferParamsV1,
        request: params_v1::Request,
        params: &Mutex<Params<OwnedFd>>,
        dh: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        let mut params = params.lock().unwrap();
        match request {
            params_v1::Request::Add {
                fd,
                plane_idx,
                offset,
                stride,
                modifier_hi,
                modifier_lo,
            } => {
                let modifier =
                    winsys::format::Modifier((modifier_hi as u64) << 32 | modifier_lo as u64);
                if let Err(e) = params.add(plane_idx, fd, offset, stride, modifier) {
                    state.post_error(res, e.code().unwrap_or(0), e.to_string());
                }
            }
            params_v1::Request::Create {
                width,
                height,
                format,
                flags,
            } => {
                let create = Create {
                    width,
                    height,
                    format: winsys::format::Fourcc(format),
                    flags: flags.into(),
                };
                match state.import(&mut params, create) {
                    Ok(buffer) => {
                        match client.create_resource::<wl_buffer::WlBuffer, Buffer, State>(
                            dh,
                            1,
                            Buffer::Dmabuf(Arc::new(buffer)),
                        ) {
                            Ok(b) => res.created(&b),
                            Err(_) => res.failed(),
                        }
                    }
                    Err(e) => match e.code() {
                        Some(code) => {
                            state.post_error(res, code, e.to_string());
                        }
                        None => {
                            println!("compositor: buffer creation failed: {e}");
                            res.failed();
                        }
                    },
                }
            }
            params_v1::Request::CreateImmed {
                buffer_id,
                width,
                height,
                format,
                flags,
            } => {
                let create = Create {
                    width,
                    height,
                    format: winsys::format::Fourcc(format),
                    flags: flags.into(),
                };
                match state.import(&mut params, create) {
                    Ok(buffer) => {
                        init.init(buffer_id, Buffer::Dmabuf(Arc::new(buffer)));
                    }
                    Err(e) => {
                        init.init(buffer_id, Buffer::Invalid);
                        state.post_error(res, e.create_immed_code(), e.to_string());
                    }
                }
            }
            _ => {}
        }
    }
}

// ---- wp_linux_drm_syncobj_v1 ----

/// A timeline's user data: the client's syncobj, imported.
pub struct Timeline(pub Arc<Syncobj>);

impl Dispatch<syncobj_manager::WpLinuxDrmSyncobjManagerV1, ()> for State {
    fn request(
        state: &mut Self,
        _: &Client,
        manager: &syncobj_manager::WpLinuxDrmSyncobjManagerV1,
        request: syncobj_manager::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        match request {
            syncobj_manager::Request::GetSurface { id, surface } => {
                let sync = init.init(id, surface.clone());
                state.stall_at(crate::StallPoint::SyncobjSurface);
                match state.surfaces.get_mut(&surface.id()) {
                    Some(surf) if surf.syncobj.is_some() => {
                        state.post_error(
                            manager,
                            syncobj_manager::Error::SurfaceExists,
                            "the surface has a syncobj surface already",
                        );
                    }
                    Some(surf) => surf.syncobj = Some(sync),
                    None => {}
                }
            }
            syncobj_manager::Request::ImportTimeline { id, fd } => {
                let dev = state
                    .syncobj_device
                    .clone()
                    .expect("advertised with a device");
                match Syncobj::import(&dev, fd.as_fd()) {
                    Ok(s) => {
                        init.init(id, Timeline(Arc::new(s)));
                    }
                    Err(e) => {
                        init.init(id, Timeline(Arc::new(Syncobj::new(&dev).expect("syncobj"))));
                        state.post_error(
                            manager,
                            syncobj_manager::Error::InvalidTimeline,
                            format!("cannot import the timeline: {e}"),
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

impl Dispatch<syncobj_surface::WpLinuxDrmSyncobjSurfaceV1, wl_surface::WlSurface> for State {
    fn request(
        state: &mut Self,
        _: &Client,
        res: &syncobj_surface::WpLinuxDrmSyncobjSurfaceV1,
        request: syncobj_surface::Request,
        surface: &wl_surface::WlSurface,
        _: &DisplayHandle,
        _: &mut DataInit<'_, Self>,
    ) {
        let point = |timeline: &syncobj_timeline::WpLinuxDrmSyncobjTimelineV1, hi: u32, lo: u32| {
            let data = timeline.data::<Timeline>().expect("timeline data");
            (timeline.id(), data.0.clone(), (hi as u64) << 32 | lo as u64)
        };
        let surf = state.surfaces.get_mut(&surface.id());
        match request {
            syncobj_surface::Request::SetAcquirePoint {
                timeline,
                point_hi,
                point_lo,
            } => {
                let p = point(&timeline, point_hi, point_lo);
                match surf {
                    Some(surf) => surf.pending.acquire_point = Some(p),
                    None => no_surface(state, res),
                }
            }
            syncobj_surface::Request::SetReleasePoint {
                timeline,
                point_hi,
                point_lo,
            } => {
                let p = point(&timeline, point_hi, point_lo);
                match surf {
                    Some(surf) => surf.pending.release_point = Some(p),
                    None => no_surface(state, res),
                }
            }
            syncobj_surface::Request::Destroy => {
                if let Some(surf) = surf {
                    surf.syncobj = None;
                }
            }
            _ => {}
        }
    }
}

/// A point set on a syncobj surface whose wl_surface is gone.
fn no_surface(state: &mut State, res: &syncobj_surface::WpLinuxDrmSyncobjSurfaceV1) {
    if let Err(e) = check_point_request(false) {
        state.post_error(res, e.code(), e.to_string());
    }
}

// ---- zwp_linux_explicit_synchronization_v1 ----

impl Dispatch<explicit_v1::ZwpLinuxExplicitSynchronizationV1, ()> for State {
    fn request(
        state: &mut Self,
        _: &Client,
        res: &explicit_v1::ZwpLinuxExplicitSynchronizationV1,
        request: explicit_v1::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        if let explicit_v1::Request::GetSynchronization { id, surface } = request {
            let sync = init.init(id, surface.clone());
            match state.surfaces.get_mut(&surface.id()) {
                Some(surf) if surf.explicit.is_some() => {
                    state.post_error(
                        res,
                        explicit_v1::Error::SynchronizationExists,
                        "the surface has a synchronization object already",
                    );
                }
                Some(surf) => surf.explicit = Some(sync),
                None => {}
            }
        }
    }
}

impl Dispatch<surface_sync::ZwpLinuxSurfaceSynchronizationV1, wl_surface::WlSurface> for State {
    fn request(
        state: &mut Self,
        _: &Client,
        res: &surface_sync::ZwpLinuxSurfaceSynchronizationV1,
        request: surface_sync::Request,
        surface: &wl_surface::WlSurface,
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        let surf = state.surfaces.get_mut(&surface.id());
        match request {
            surface_sync::Request::SetAcquireFence { fd } => {
                let Some(surf) = surf else {
                    state.post_error(
                        res,
                        surface_sync::Error::NoSurface,
                        "the wl_surface was destroyed",
                    );
                    return;
                };
                if surf.pending.acquire_fence.is_some() {
                    state.post_error(
                        res,
                        surface_sync::Error::DuplicateFence,
                        "an acquire fence was set already",
                    );
                    return;
                }
                match SyncFile::from_fd(fd) {
                    Ok(fence) => surf.pending.acquire_fence = Some(fence),
                    Err(e) => {
                        state.post_error(res, surface_sync::Error::InvalidFence, e.to_string());
                    }
                }
            }
            surface_sync::Request::GetRelease { release } => {
                let release = init.init(release, ());
                let Some(surf) = surf else {
                    state.post_error(
                        res,
                        surface_sync::Error::NoSurface,
                        "the wl_surface was destroyed",
                    );
                    return;
                };
                if surf.pending.buffer_release.is_some() {
                    state.post_error(
                        res,
                        surface_sync::Error::DuplicateRelease,
                        "a release was asked already",
                    );
                    return;
                }
                surf.pending.buffer_release = Some(release);
            }
            surface_sync::Request::Destroy => {
                if let Some(surf) = surf {
                    surf.explicit = None;
                }
            }
            _ => {}
        }
    }
}

// ---- wp_presentation ----

impl GlobalDispatch<wp_presentation::WpPresentation, ()> for State {
    fn bind(
        _: &mut Self,
        _: &DisplayHandle,
        _: &Client,
        resource: New<wp_presentation::WpPresentation>,
        _: &(),
        init: &mut DataInit<'_, Self>,
    ) {
        let p = init.init(resource, ());
        p.clock_id(libc_clock_monotonic());
    }
}

/// `CLOCK_MONOTONIC`'s id.
fn libc_clock_monotonic() -> u32 {
    1
}

impl Dispatch<wp_presentation::WpPresentation, ()> for State {
    fn request(
        state: &mut Self,
        _: &Client,
        _: &wp_presentation::WpPresentation,
        request: wp_presentation::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        if let wp_presentation::Request::Feedback { surface, callback } = request {
            let fb = init.init(callback, ());
            match state.surfaces.get_mut(&surface.id()) {
                Some(surf) => surf.pending.feedbacks.push(fb),
                None => fb.discarded(),
            }
        }
    }
}

/// A commit's pending state, checked against the syncobj and explicit-sync
/// rules; `None` after posting the protocol error.
pub fn checked_commit(
    state: &mut State,
    id: &wayland_server::backend::ObjectId,
) -> Option<NewContent> {
    let surf = state.surfaces.get_mut(id)?;
    let pending = std::mem::take(&mut surf.pending);
    let attached = match &pending.attach {
        None => Attached::Nothing,
        Some(None) => Attached::Null,
        Some(Some(b)) => match b.data::<Buffer>() {
            Some(Buffer::Dmabuf(_)) => Attached::Dmabuf,
            _ => Attached::Other,
        },
    };
    if let Some(sync) = &surf.syncobj {
        let commit = Commit {
            buffer: attached,
            acquire: pending
                .acquire_point
                .as_ref()
                .map(|(id, _, p)| (id.clone(), *p)),
            release: pending
                .release_point
                .as_ref()
                .map(|(id, _, p)| (id.clone(), *p)),
        };
        if let Err(e) = check_commit(&commit) {
            let sync = sync.clone();
            state.post_error(&sync, e.code(), e.to_string());
            return None;
        }
    }
    if let Some(sync) = &surf.explicit {
        let has_sync = pending.acquire_fence.is_some() || pending.buffer_release.is_some();
        let error = match attached {
            Attached::Nothing | Attached::Null if has_sync => Some((
                surface_sync::Error::NoBuffer,
                "a fence or release without a buffer",
            )),
            Attached::Other if has_sync => Some((
                surface_sync::Error::UnsupportedBuffer,
                "explicit sync on a buffer that is not a dma-buf",
            )),
            _ => None,
        };
        if let Some((code, msg)) = error {
            let sync = sync.clone();
            state.post_error(&sync, code, msg);
            return None;
        }
    }
    Some(NewContent { pending })
}
