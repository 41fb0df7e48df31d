//! Which kernel features each test needs, declared here rather than found
//! out by skipping, and what each guest kernel of the test bed lacks.
//!
//! `cargo xtask test` runs every test on the 6.12 kernel, then boots Debian
//! 11's 5.10 kernel and runs everything that does not need a feature 5.10
//! lacks: whole binaries are left out, single tests are passed to libtest
//! as `--exact --skip NAME`. The guest checks that each declared name
//! exists (libtest's "filtered out" count must equal the skips), and the
//! suite's own `kernel` test checks the declared lacks against the running
//! kernel, so the table cannot silently go stale. A test missing from the
//! table that needs a lacking feature fails on 5.10 (devices are required).

use serde::{Deserialize, Serialize};

use Feature::*;

/// A kernel interface some tests need beyond vgem and virtio-gpu.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// `DMA_BUF_IOCTL_EXPORT_SYNC_FILE` / `IMPORT_SYNC_FILE` (Linux 6.0).
    DmabufSyncFile,
    /// `/dev/udmabuf` (`CONFIG_UDMABUF`; Debian enables it from 6.x).
    Udmabuf,
    /// `/dev/dma_heap/system` (`CONFIG_DMABUF_HEAPS_SYSTEM`).
    DmaHeap,
    /// `DRM_IOCTL_SYNCOBJ_EVENTFD` (Linux 6.6).
    SyncobjEventfd,
    /// Syncobjs (and timelines) on virtio_gpu (`DRM_CAP_SYNCOBJ`; 5.10's
    /// virtio_gpu has none: `DRM_IOCTL_SYNCOBJ_CREATE` gives EOPNOTSUPP).
    VirtioGpuSyncobj,
    /// lavapipe's dma-buf export, modifiers and SYNC_FD, which Mesa 25
    /// offers only where `/dev/udmabuf` exists.
    LavapipeDmabuf,
}

impl Feature {
    /// The name used in the environment and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Feature::DmabufSyncFile => "dmabuf_sync_file",
            Feature::Udmabuf => "udmabuf",
            Feature::DmaHeap => "dma_heap",
            Feature::SyncobjEventfd => "syncobj_eventfd",
            Feature::VirtioGpuSyncobj => "virtio_gpu_syncobj",
            Feature::LavapipeDmabuf => "lavapipe_dmabuf",
        }
    }
}

/// What the old (5.10) guest kernel lacks, as Debian 11 builds it.
pub const OLD_KERNEL_LACKS: &[Feature] = &[
    Feature::DmabufSyncFile,
    Feature::Udmabuf,
    Feature::DmaHeap,
    Feature::SyncobjEventfd,
    Feature::VirtioGpuSyncobj,
    Feature::LavapipeDmabuf,
];

/// Every test binary (as the report names it) and test that needs
/// something; `"*"` is every test of the binary.
///
/// A controllable sync_file (`tests/common::controllable_fence`: a vgem
/// write fence exported with `DMA_BUF_IOCTL_EXPORT_SYNC_FILE`) needs
/// [`Feature::DmabufSyncFile`]: before 6.0 there is no way to get a
/// sync_file for a fence userspace controls on this bed (no sw_sync, no
/// syncobjs on vgem or 5.10's virtio_gpu).
pub const NEEDS: &[(&str, &str, &[Feature])] = &[
    (
        "lib winsys",
        "sync::sync_file::tests::the_check_reads_whether_the_fence_has_signalled",
        &[DmabufSyncFile],
    ),
    (
        "test bad_input",
        "allocators_refuse_bad_requests_without_leaking",
        &[Udmabuf],
    ),
    (
        "test bad_input",
        "failed_map_and_timeouts_leak_nothing",
        &[DmaHeap],
    ),
    (
        "test bad_input",
        "planes_outside_the_buffer_are_refused",
        &[DmaHeap],
    ),
    (
        "test bad_input",
        "sync_file_given_as_dmabuf_and_dmabuf_given_as_sync_file",
        &[DmaHeap, DmabufSyncFile],
    ),
    (
        "test bad_input",
        "zero_size_wrong_plane_counts_and_unknown_formats_are_refused",
        &[DmaHeap],
    ),
    // The IGT dmabuf_sync_file mirror: the 6.0 ioctls themselves.
    ("test dmabuf_sync_file", "*", &[DmabufSyncFile]),
    (
        "test fallback",
        "attach_fence_fallback_times_out_with_a_typed_error",
        &[DmabufSyncFile],
    ),
    (
        "test fallback",
        "attach_fence_waits_on_the_cpu_before_returning",
        &[DmabufSyncFile],
    ),
    (
        "test fallback",
        "implicit_release_falls_back_to_a_fence_to_wait_for",
        &[DmabufSyncFile],
    ),
    (
        "test map",
        "bad_planes_ranges_and_row_buffers_are_typed_errors",
        &[Udmabuf],
    ),
    (
        "test map",
        "every_exporter_round_trips_a_frame_through_guards",
        &[Udmabuf, DmaHeap],
    ),
    (
        "test map",
        "heap_writes_are_seen_by_an_independent_second_mapping",
        &[DmaHeap],
    ),
    (
        "test map",
        "map_failure_on_a_later_plane_unmaps_the_earlier_ones",
        &[Udmabuf, DmaHeap],
    ),
    (
        "test map",
        "row_copies_follow_the_stride_and_leave_padding_alone",
        &[Udmabuf],
    ),
    ("test map", "sync_ioctl_rejects_invalid_flags", &[Udmabuf]),
    (
        "test map",
        "tiled_layouts_have_no_rows_but_their_bytes_copy",
        &[DmaHeap],
    ),
    (
        "test map",
        "udmabuf_multi_plane_nv12_planes_land_at_their_offsets",
        &[Udmabuf],
    ),
    (
        "test map",
        "udmabuf_writes_through_the_map_are_seen_through_the_memfd_and_back",
        &[Udmabuf],
    ),
    (
        "test map",
        "write_through_a_read_only_fd_is_a_typed_error",
        &[DmaHeap],
    ),
    (
        "test syncobj",
        "binary_syncobj_import_export_sync_file",
        &[VirtioGpuSyncobj, DmabufSyncFile],
    ),
    (
        "test syncobj",
        "eventfd_fires_when_the_point_signals",
        &[VirtioGpuSyncobj, SyncobjEventfd, DmabufSyncFile],
    ),
    (
        "test syncobj",
        "one_eventfd_is_told_of_several_points_and_serves_again_after_a_drain",
        &[VirtioGpuSyncobj, SyncobjEventfd],
    ),
    (
        "test syncobj",
        "signal_query_and_wait_on_a_timeline",
        &[VirtioGpuSyncobj],
    ),
    (
        "test syncobj",
        "sync_file_to_point_and_back_follows_the_fence",
        &[VirtioGpuSyncobj, DmabufSyncFile],
    ),
    (
        "test syncobj",
        "syncobj_fd_shares_the_timeline_with_another_device_fd",
        &[VirtioGpuSyncobj],
    ),
    (
        "test syncobj",
        "transfer_copies_a_point_between_syncobjs",
        &[VirtioGpuSyncobj, DmabufSyncFile],
    ),
    (
        "test syncobj",
        "virtio_gpu_reports_timeline_syncobjs",
        &[VirtioGpuSyncobj],
    ),
    // The compositor's blocks: sync_files come from vgem fences exported
    // with the 6.0 ioctl; timelines live on virtio_gpu; the gate waits on
    // a point through the 6.6 eventfd. The implicit gate and the params
    // checks run on 5.10 too (its fallback: epoll over the dma-bufs).
    (
        "test server",
        "explicit_release_sends_the_merged_fence_exactly_once",
        &[DmabufSyncFile],
    ),
    (
        "test server",
        "fence_gate_follows_the_clients_acquire_fence",
        &[DmabufSyncFile],
    ),
    (
        "test server",
        "implicit_gate_snapshot_ignores_writes_attached_after_the_commit",
        &[DmabufSyncFile],
    ),
    (
        "test server",
        "implicit_release_makes_the_clients_next_write_wait_for_the_reads",
        &[DmabufSyncFile],
    ),
    (
        "test server",
        "materialized_implicit_gate_opens_at_once_and_hands_the_fence_on",
        &[DmabufSyncFile],
    ),
    (
        "test server",
        "release_into_a_timeline_point_waits_for_every_use",
        &[VirtioGpuSyncobj, SyncobjEventfd, DmabufSyncFile],
    ),
    (
        "test server",
        "release_without_uses_signals_the_point_at_once_and_drop_still_releases",
        &[VirtioGpuSyncobj],
    ),
    (
        "test server",
        "use_points_are_taken_in_once_they_materialize",
        &[VirtioGpuSyncobj, SyncobjEventfd, DmabufSyncFile],
    ),
    (
        "test server",
        "timeline_gate_opens_when_the_point_materializes_or_signals",
        &[VirtioGpuSyncobj, SyncobjEventfd, DmabufSyncFile],
    ),
    ("test udmabuf", "*", &[Udmabuf]),
    // The swapchain needs lavapipe's dma-buf images.
    ("test swapchain", "*", &[LavapipeDmabuf]),
    // So does the cube through winsys (and each test runs it too).
    ("test cube", "*", &[LavapipeDmabuf]),
    // The layer presents with winsys's swapchain. Not "test
    // layer_fallback": it runs on both kernels, and on 5.10 proves the layer
    // steps aside where lavapipe lacks what winsys needs.
    ("test layer", "*", &[LavapipeDmabuf]),
    ("test layer_soak", "*", &[LavapipeDmabuf]),
    ("example cube", "*", &[LavapipeDmabuf]),
    // The reference compositor imports client dma-bufs into lavapipe.
    ("test compositor", "*", &[LavapipeDmabuf]),
    ("example compositor", "*", &[LavapipeDmabuf]),
    // The swapchain `winsys info` creates needs lavapipe's dma-buf images.
    (
        "test tool",
        "info_names_what_the_compositor_offers_and_what_a_swapchain_gets",
        &[LavapipeDmabuf],
    ),
    // The acquire sync_file is a vgem fence exported from the dma-buf.
    (
        "test wayland",
        "explicit_sync_frames_reach_weston_with_their_acquire_fences",
        &[DmabufSyncFile],
    ),
    // lavapipe without udmabuf has no modifiers, no SYNC_FD.
    ("test vulkan", "*", &[LavapipeDmabuf]),
    (
        "test vulkan_fallback",
        "a_gpu_write_is_complete_when_submit_returns",
        &[DmabufSyncFile],
    ),
    (
        "test vulkan_fallback",
        "gpu_pattern_still_reaches_the_cpu_read_guard",
        &[LavapipeDmabuf],
    ),
    (
        "test vulkan_fallback",
        "waiting_for_a_vgem_write_fence_blocks_on_the_cpu_until_it_signals",
        &[LavapipeDmabuf],
    ),
];

/// Environment variable telling the tests what the running kernel lacks
/// (comma-separated [`Feature::name`]s), for the suite's declaration check.
pub const LACKS_ENV: &str = "WINSYS_KERNEL_LACKS";

/// How one binary runs on a kernel that lacks `lacks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every test runs.
    All,
    /// The binary is left out; the features it needs that are lacking.
    None(Vec<Feature>),
    /// These tests are skipped (exact names), with the features each lacks.
    Skip(Vec<(String, Vec<Feature>)>),
}

/// Decides how `binary` runs on a kernel that lacks `lacks`.
pub fn select(binary: &str, lacks: &[Feature]) -> Selection {
    let lacking = |needs: &[Feature]| -> Vec<Feature> {
        needs
            .iter()
            .copied()
            .filter(|f| lacks.contains(f))
            .collect()
    };
    let mut skips = Vec::new();
    for (bin, test, needs) in NEEDS {
        if *bin != binary {
            continue;
        }
        let missing = lacking(needs);
        if missing.is_empty() {
            continue;
        }
        if *test == "*" {
            return Selection::None(missing);
        }
        skips.push((test.to_string(), missing));
    }
    if skips.is_empty() {
        Selection::All
    } else {
        Selection::Skip(skips)
    }
}

/// libtest arguments for a [`Selection::Skip`].
pub fn skip_args(skips: &[(String, Vec<Feature>)]) -> Vec<String> {
    let mut args = vec!["--exact".to_string()];
    for (name, _) in skips {
        args.push("--skip".into());
        args.push(name.clone());
    }
    args
}

/// `a, b` of feature names.
pub fn names(features: &[Feature]) -> String {
    features
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_test_once_and_only_known_binaries() {
        for (i, (bin, test, needs)) in NEEDS.iter().enumerate() {
            assert!(
                bin.starts_with("test ") || bin.starts_with("example ") || bin.starts_with("lib "),
                "{bin}"
            );
            assert!(!needs.is_empty(), "{bin} {test}: empty needs");
            assert!(
                !NEEDS[..i].iter().any(|(b, t, _)| b == bin && t == test),
                "{bin} {test} listed twice"
            );
        }
    }

    #[test]
    fn nothing_is_left_out_on_a_kernel_that_lacks_nothing() {
        for (bin, _, _) in NEEDS {
            assert_eq!(select(bin, &[]), Selection::All);
        }
    }

    #[test]
    fn skip_args_are_exact() {
        let args = skip_args(&[("a::b".into(), vec![Feature::Udmabuf])]);
        assert_eq!(args, ["--exact", "--skip", "a::b"]);
    }
}
