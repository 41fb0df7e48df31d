//! Which way a Wayland client synchronizes with the compositor, chosen
//! from what the compositor offers and what the machine can do, best
//! first (as Mesa's WSI orders them), or forced by the app.
//!
//! Best first is best on GPUs. A compositor that composes on the CPU (its
//! main device renders nothing) pays for fences instead: weston's gl
//! renderer on llvmpipe finishes its rendering to make a release fence, so
//! it composes synchronously for an explicit-sync surface and sends the
//! frame callbacks of that composition only after it — the callbacks a
//! FIFO swapchain waits for; and implicit sync has no fence there that
//! proves its reads are over (llvmpipe puts none in the dma-buf). So a
//! FIFO swapchain there takes wl_shm in place of explicit or implicit sync
//! (drm-syncobj, whose release points cost wlroots no such wait, stays:
//! [`shm_in_place_of`]); [`super::swapchain::Swapchain`] asks it, as only
//! it knows the present mode, the format and the device. Measured on the
//! test bed (weston gl, FIFO, the cube, steady frames a second, two
//! rounds; `docs/benchmarks.md`): at 256x256 explicit sync 18.9 / 19.6,
//! zero-copy wl_shm 30.8 / 33.2, Mesa's WSI 30.4 / 28.7; at 1920x1080
//! 2.27 / 2.39, 2.27 / 2.29 and 2.11 / 2.10. MAILBOX does not wait for
//! callbacks, and there explicit sync with six images
//! ([`super::swapchain::MAILBOX_EXPLICIT_IMAGES`]) was ahead of wl_shm at
//! 256x256 (89.3 / 109.1 against 76.4 / 68.0).

use std::fmt;

/// How frames and their fences reach the compositor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SyncMode {
    /// `wp_linux_drm_syncobj_v1`: per-image acquire and release timeline
    /// points; an image is reused when its release point signals.
    DrmSyncobj,
    /// `zwp_linux_explicit_synchronization_v1`: an acquire sync_file per
    /// commit (none when the rendering is already done: nothing to wait
    /// for), a release fence back.
    ExplicitSync,
    /// linux-dmabuf with the fences inside the dma-buf (the render-done
    /// fence imported as a write fence before commit).
    Implicit,
    /// `wl_shm`, for compositors without linux-dmabuf, when they refuse
    /// the buffers, and for FIFO on one that composes on the CPU (see the
    /// module docs): the images' own memory as the pools (udmabuf), else
    /// one CPU copy per frame; each frame's rendering is waited for on the
    /// CPU.
    Shm,
}

impl SyncMode {
    /// Every mode, best first.
    pub const ALL: [SyncMode; 4] = [
        SyncMode::DrmSyncobj,
        SyncMode::ExplicitSync,
        SyncMode::Implicit,
        SyncMode::Shm,
    ];

    /// The name used on command lines (`syncobj`, `explicit`, `implicit`,
    /// `shm`).
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::DrmSyncobj => "syncobj",
            SyncMode::ExplicitSync => "explicit",
            SyncMode::Implicit => "implicit",
            SyncMode::Shm => "shm",
        }
    }

    /// Parses [`SyncMode::name`].
    pub fn from_name(name: &str) -> Option<SyncMode> {
        SyncMode::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl fmt::Display for SyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the compositor offers (from its globals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offer {
    /// `zwp_linux_dmabuf_v1` version, if offered.
    pub linux_dmabuf: Option<u32>,
    /// `wp_linux_drm_syncobj_manager_v1` version, if offered.
    pub drm_syncobj: Option<u32>,
    /// `zwp_linux_explicit_synchronization_v1` version, if offered.
    pub explicit_sync: Option<u32>,
    /// `wl_shm` version, if offered.
    pub shm: Option<u32>,
}

/// What this machine can do for each mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Abilities {
    /// A DRM node with timeline syncobjs that the compositor's device
    /// shares (virtio_gpu here; not vgem).
    pub timeline_syncobj: bool,
    /// The render-done fence can be had as a sync_file (a Vulkan driver
    /// with SYNC_FD export, or the kernel's dma-buf sync_file export).
    pub sync_file: bool,
    /// The client can render into dma-bufs the compositor imports.
    pub dmabuf: bool,
}

/// Why a mode cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sync mode {mode} is not available: {why}")]
pub struct Unavailable {
    /// The mode asked for.
    pub mode: SyncMode,
    /// What is missing.
    pub why: &'static str,
}

/// Whether `mode` can be used, and why not.
pub fn check(mode: SyncMode, offer: &Offer, can: &Abilities) -> Result<(), Unavailable> {
    let missing = |why| Err(Unavailable { mode, why });
    let dmabuf = |then: Result<(), Unavailable>| match (offer.linux_dmabuf, can.dmabuf) {
        (None, _) => missing("the compositor offers no zwp_linux_dmabuf_v1"),
        // create_immed needs v2, modifiers v3.
        (Some(v), _) if v < 3 => missing("zwp_linux_dmabuf_v1 below version 3 (no modifiers)"),
        (Some(_), false) => missing("the client cannot render into shareable dma-bufs"),
        (Some(_), true) => then,
    };
    match mode {
        SyncMode::DrmSyncobj => match (offer.drm_syncobj, can.timeline_syncobj) {
            (None, _) => missing("the compositor offers no wp_linux_drm_syncobj_manager_v1"),
            (Some(_), false) => missing("no DRM node with timeline syncobjs shared with it"),
            (Some(_), true) => dmabuf(Ok(())),
        },
        SyncMode::ExplicitSync => match (offer.explicit_sync, can.sync_file) {
            (None, _) => missing("the compositor offers no zwp_linux_explicit_synchronization_v1"),
            (Some(_), false) => missing("the render-done fence cannot be had as a sync_file"),
            (Some(_), true) => dmabuf(Ok(())),
        },
        SyncMode::Implicit => dmabuf(Ok(())),
        SyncMode::Shm => match offer.shm {
            Some(_) => Ok(()),
            None => missing("the compositor offers no wl_shm"),
        },
    }
}

/// Whether `chosen` gives way to wl_shm for a FIFO swapchain on a
/// compositor that composes on the CPU (the module docs say why): a fence
/// mode (explicit or implicit) does, where wl_shm is available;
/// drm-syncobj stays. The swapchain asks this of an unforced choice.
pub fn shm_in_place_of(chosen: SyncMode, offer: &Offer, can: &Abilities) -> bool {
    matches!(chosen, SyncMode::ExplicitSync | SyncMode::Implicit)
        && check(SyncMode::Shm, offer, can).is_ok()
}

/// The best mode available ([`SyncMode::ALL`] is best first), or
/// `forced` if it is available.
pub fn choose(
    offer: &Offer,
    can: &Abilities,
    forced: Option<SyncMode>,
) -> Result<SyncMode, Unavailable> {
    if let Some(mode) = forced {
        return check(mode, offer, can).map(|()| mode);
    }
    let mut last = None;
    for mode in SyncMode::ALL {
        match check(mode, offer, can) {
            Ok(()) => return Ok(mode),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("ALL is not empty"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_CAN: Abilities = Abilities {
        timeline_syncobj: true,
        sync_file: true,
        dmabuf: true,
    };

    fn offer(dmabuf: bool, syncobj: bool, explicit: bool, shm: bool) -> Offer {
        Offer {
            linux_dmabuf: dmabuf.then_some(5),
            drm_syncobj: syncobj.then_some(1),
            explicit_sync: explicit.then_some(2),
            shm: shm.then_some(1),
        }
    }

    #[test]
    fn best_mode_per_compositor_of_the_test_bed() {
        // sway 1.12: drm-syncobj.
        let sway = offer(true, true, false, true);
        assert_eq!(choose(&sway, &ALL_CAN, None), Ok(SyncMode::DrmSyncobj));
        // weston 14 on a GPU (or in MAILBOX): explicit sync.
        let weston = offer(true, false, true, true);
        assert_eq!(choose(&weston, &ALL_CAN, None), Ok(SyncMode::ExplicitSync));
        // mutter 48: implicit only.
        let mutter = offer(true, false, false, true);
        assert_eq!(choose(&mutter, &ALL_CAN, None), Ok(SyncMode::Implicit));
        // pixman weston: shm only.
        let pixman = offer(false, false, false, true);
        assert_eq!(choose(&pixman, &ALL_CAN, None), Ok(SyncMode::Shm));
        assert!(choose(&offer(false, false, false, false), &ALL_CAN, None).is_err());
        // linux-dmabuf v2: no modifiers, so wl_shm.
        let old = Offer {
            linux_dmabuf: Some(2),
            ..mutter
        };
        assert_eq!(choose(&old, &ALL_CAN, None), Ok(SyncMode::Shm));
    }

    #[test]
    fn machine_abilities_move_the_choice_down() {
        let sway = offer(true, true, false, true);
        let no_timeline = Abilities {
            timeline_syncobj: false,
            ..ALL_CAN
        };
        // sway without a timeline node: implicit (sway has no explicit-sync).
        assert_eq!(choose(&sway, &no_timeline, None), Ok(SyncMode::Implicit));
        let weston = offer(true, false, true, true);
        let no_sync_file = Abilities {
            sync_file: false,
            ..ALL_CAN
        };
        assert_eq!(choose(&weston, &no_sync_file, None), Ok(SyncMode::Implicit));
        let no_dmabuf = Abilities {
            dmabuf: false,
            ..ALL_CAN
        };
        assert_eq!(choose(&weston, &no_dmabuf, None), Ok(SyncMode::Shm));
    }

    #[test]
    fn on_a_cpu_compositor_fences_give_way_to_wl_shm_and_drm_syncobj_stays() {
        // weston gl on llvmpipe: explicit sync gives way.
        let weston = offer(true, false, true, true);
        assert!(shm_in_place_of(SyncMode::ExplicitSync, &weston, &ALL_CAN));
        // An implicit-only one: implicit gives way too.
        let mutter = offer(true, false, false, true);
        assert!(shm_in_place_of(SyncMode::Implicit, &mutter, &ALL_CAN));
        // sway on virtio-gpu without 3D: drm-syncobj stays.
        let sway = offer(true, true, false, true);
        assert!(!shm_in_place_of(SyncMode::DrmSyncobj, &sway, &ALL_CAN));
        // Without wl_shm the fences serve.
        let no_shm = offer(true, false, true, false);
        assert!(!shm_in_place_of(SyncMode::ExplicitSync, &no_shm, &ALL_CAN));
        // wl_shm already: nothing to give way.
        assert!(!shm_in_place_of(SyncMode::Shm, &weston, &ALL_CAN));
    }

    #[test]
    fn forced_modes_are_honoured_or_refused_with_the_reason() {
        let weston = offer(true, false, true, true);
        assert_eq!(
            choose(&weston, &ALL_CAN, Some(SyncMode::Implicit)),
            Ok(SyncMode::Implicit)
        );
        assert_eq!(
            choose(&weston, &ALL_CAN, Some(SyncMode::Shm)),
            Ok(SyncMode::Shm)
        );
        let err = choose(&weston, &ALL_CAN, Some(SyncMode::DrmSyncobj)).unwrap_err();
        assert_eq!(err.mode, SyncMode::DrmSyncobj);
        assert!(err.why.contains("wp_linux_drm_syncobj_manager_v1"), "{err}");
        for m in SyncMode::ALL {
            assert_eq!(SyncMode::from_name(m.name()), Some(m));
        }
        assert_eq!(SyncMode::from_name("auto"), None);
    }
}
