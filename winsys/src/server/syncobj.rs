//! `wp_linux_drm_syncobj_surface_v1`: a commit's timeline points checked
//! against the protocol's rules before the compositor applies it.
//!
//! The rules (linux-drm-syncobj-v1.xml): a commit that attaches a non-null
//! buffer carries both an acquire and a release point (`no_acquire_point`,
//! `no_release_point`); a commit without one carries neither
//! (`no_buffer`); the buffer must support explicit sync, which every
//! linux-dmabuf buffer does (`unsupported_buffer`, e.g. for wl_shm); where
//! both points are on one timeline, acquire < release
//! (`conflicting_points`). Requests after the surface is gone are
//! `no_surface`, checked by [`check_point_request`].
//!
//! ```
//! use winsys::server::syncobj::{check_commit, code, Attached, Commit};
//!
//! // Timelines are whatever the compositor identifies them by (here u32).
//! let commit = Commit { buffer: Attached::Dmabuf, acquire: Some((7u32, 5)), release: Some((7, 5)) };
//! assert_eq!(check_commit(&commit).unwrap_err().code(), code::CONFLICTING_POINTS);
//! let commit = Commit { release: Some((7, 6)), ..commit };
//! assert!(check_commit(&commit).is_ok());
//! ```

/// `wp_linux_drm_syncobj_surface_v1.error` values.
pub mod code {
    /// The associated wl_surface was destroyed.
    pub const NO_SURFACE: u32 = 1;
    /// The buffer does not support explicit synchronization.
    pub const UNSUPPORTED_BUFFER: u32 = 2;
    /// No buffer was attached.
    pub const NO_BUFFER: u32 = 3;
    /// No acquire timeline point was set.
    pub const NO_ACQUIRE_POINT: u32 = 4;
    /// No release timeline point was set.
    pub const NO_RELEASE_POINT: u32 = 5;
    /// Acquire and release timeline points are in conflict.
    pub const CONFLICTING_POINTS: u32 = 6;
}

/// What the commit attaches (`wl_surface.attach` in this commit cycle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// No attach request since the last commit.
    Nothing,
    /// `attach(NULL)`: the surface's content goes away.
    Null,
    /// A linux-dmabuf buffer (explicit sync is guaranteed for these).
    Dmabuf,
    /// Another kind (wl_shm, ...) that the compositor cannot sync explicitly.
    Other,
}

/// The pending state of one commit: what is attached and the points set.
/// `T` identifies a timeline (a protocol object id, an `Arc` pointer, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit<T> {
    /// The attached buffer.
    pub buffer: Attached,
    /// `set_acquire_point`: timeline and point.
    pub acquire: Option<(T, u64)>,
    /// `set_release_point`: timeline and point.
    pub release: Option<(T, u64)>,
}

/// The points an accepted commit's buffer goes with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Points<T> {
    /// Timeline and point to wait for before reading the buffer.
    pub acquire: (T, u64),
    /// Timeline and point to signal when done with it.
    pub release: (T, u64),
}

/// A commit the protocol forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncobjError {
    /// A point set after the surface was destroyed.
    #[error("the wl_surface of this syncobj surface was destroyed")]
    NoSurface,
    /// A non-null buffer that cannot be synchronized explicitly.
    #[error("the attached buffer (not a dma-buf) does not support explicit sync")]
    UnsupportedBuffer,
    /// Points without a non-null buffer attached in the same commit.
    #[error("{which} point set without a buffer attached in this commit")]
    NoBuffer {
        /// "acquire", "release" or "acquire and release".
        which: &'static str,
    },
    /// A buffer without an acquire point.
    #[error("a buffer was attached without an acquire point")]
    NoAcquirePoint,
    /// A buffer without a release point.
    #[error("a buffer was attached without a release point")]
    NoReleasePoint,
    /// Both points on one timeline, release not after acquire.
    #[error("acquire point {acquire} and release point {release} on one timeline: release must be later")]
    ConflictingPoints {
        /// The acquire point.
        acquire: u64,
        /// The release point.
        release: u64,
    },
}

impl SyncobjError {
    /// The protocol error to post ([`code`]).
    pub fn code(&self) -> u32 {
        match self {
            SyncobjError::NoSurface => code::NO_SURFACE,
            SyncobjError::UnsupportedBuffer => code::UNSUPPORTED_BUFFER,
            SyncobjError::NoBuffer { .. } => code::NO_BUFFER,
            SyncobjError::NoAcquirePoint => code::NO_ACQUIRE_POINT,
            SyncobjError::NoReleasePoint => code::NO_RELEASE_POINT,
            SyncobjError::ConflictingPoints { .. } => code::CONFLICTING_POINTS,
        }
    }
}

/// Check `set_acquire_point` / `set_release_point` when they arrive: the
/// surface must still exist.
pub fn check_point_request(surface_alive: bool) -> Result<(), SyncobjError> {
    if surface_alive {
        Ok(())
    } else {
        Err(SyncobjError::NoSurface)
    }
}

/// Check a commit on a surface that has a `wp_linux_drm_syncobj_surface_v1`.
/// On success, the acquire and release points the new buffer goes with
/// (`None` for a commit without a buffer).
pub fn check_commit<T: PartialEq + Clone>(
    commit: &Commit<T>,
) -> Result<Option<Points<T>>, SyncobjError> {
    match commit.buffer {
        Attached::Nothing | Attached::Null => {
            let which = match (&commit.acquire, &commit.release) {
                (None, None) => return Ok(None),
                (Some(_), None) => "acquire",
                (None, Some(_)) => "release",
                (Some(_), Some(_)) => "acquire and release",
            };
            Err(SyncobjError::NoBuffer { which })
        }
        Attached::Other => Err(SyncobjError::UnsupportedBuffer),
        Attached::Dmabuf => {
            let acquire = commit.acquire.clone().ok_or(SyncobjError::NoAcquirePoint)?;
            let release = commit.release.clone().ok_or(SyncobjError::NoReleasePoint)?;
            if acquire.0 == release.0 && acquire.1 >= release.1 {
                return Err(SyncobjError::ConflictingPoints {
                    acquire: acquire.1,
                    release: release.1,
                });
            }
            Ok(Some(Points { acquire, release }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(
        buffer: Attached,
        acquire: Option<(u8, u64)>,
        release: Option<(u8, u64)>,
    ) -> Commit<u8> {
        Commit {
            buffer,
            acquire,
            release,
        }
    }

    #[test]
    fn every_rule_posts_its_code() {
        use Attached::*;
        let cases = [
            (commit(Nothing, Some((1, 1)), None), Some(code::NO_BUFFER)),
            (commit(Null, None, Some((1, 2))), Some(code::NO_BUFFER)),
            (
                commit(Null, Some((1, 1)), Some((1, 2))),
                Some(code::NO_BUFFER),
            ),
            (
                commit(Other, Some((1, 1)), Some((2, 1))),
                Some(code::UNSUPPORTED_BUFFER),
            ),
            (commit(Other, None, None), Some(code::UNSUPPORTED_BUFFER)),
            (
                commit(Dmabuf, None, Some((1, 2))),
                Some(code::NO_ACQUIRE_POINT),
            ),
            (
                commit(Dmabuf, Some((1, 1)), None),
                Some(code::NO_RELEASE_POINT),
            ),
            (
                commit(Dmabuf, Some((1, 2)), Some((1, 2))),
                Some(code::CONFLICTING_POINTS),
            ),
            (
                commit(Dmabuf, Some((1, 3)), Some((1, 2))),
                Some(code::CONFLICTING_POINTS),
            ),
            // Different timelines: any order.
            (commit(Dmabuf, Some((1, 3)), Some((2, 1))), None),
            (commit(Dmabuf, Some((1, 1)), Some((1, 2))), None),
            (commit(Nothing, None, None), None),
            (commit(Null, None, None), None),
        ];
        for (c, want) in cases {
            assert_eq!(check_commit(&c).err().map(|e| e.code()), want, "{c:?}");
        }
        assert_eq!(
            check_point_request(false).unwrap_err().code(),
            code::NO_SURFACE
        );
        assert!(check_point_request(true).is_ok());
    }

    #[test]
    fn an_accepted_commit_hands_back_its_points() {
        let c = commit(Attached::Dmabuf, Some((4, 10)), Some((5, 11)));
        let points = Points {
            acquire: (4, 10),
            release: (5, 11),
        };
        assert_eq!(check_commit(&c), Ok(Some(points)));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn attached() -> impl Strategy<Value = Attached> {
            prop_oneof![
                Just(Attached::Nothing),
                Just(Attached::Null),
                Just(Attached::Dmabuf),
                Just(Attached::Other),
            ]
        }

        fn point() -> impl Strategy<Value = Option<(u8, u64)>> {
            proptest::option::of((0u8..3, prop_oneof![0u64..4, any::<u64>()]))
        }

        proptest! {
            /// A commit is accepted exactly when the protocol allows it.
            #[test]
            fn commits_are_accepted_exactly_when_the_protocol_allows(
                buffer in attached(), acquire in point(), release in point(),
            ) {
                let c = Commit { buffer, acquire, release };
                let allowed = match buffer {
                    Attached::Nothing | Attached::Null => acquire.is_none() && release.is_none(),
                    Attached::Other => false,
                    Attached::Dmabuf => match (acquire, release) {
                        (Some((ta, a)), Some((tr, r))) => ta != tr || a < r,
                        _ => false,
                    },
                };
                let got = check_commit(&c);
                prop_assert_eq!(got.is_ok(), allowed, "{:?}: {:?}", c, got);
                if let Ok(Some(p)) = got {
                    prop_assert_eq!((Some(p.acquire), Some(p.release)), (acquire, release));
                }
            }
        }
    }
}
