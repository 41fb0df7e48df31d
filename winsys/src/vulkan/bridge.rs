//! The sync bridge: Vulkan semaphores and fences <-> [`SyncFile`]s, and
//! GPU work ordered against dma-bufs' implicit fences and timeline points.
//!
//! Low level: [`Semaphore`] and [`Fence`] give and take sync_files
//! (`VK_EXTERNAL_*_HANDLE_TYPE_SYNC_FD_BIT`; imports are temporary).
//!
//! High level: a [`Submission`] is one command buffer plus what it waits
//! for and what waits for it:
//!
//! - [`Submission::wait_for_dmabuf`]: the dma-buf's fences for the access
//!   (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`) become a wait semaphore;
//! - [`Submission::signal_dmabuf`]: after submitting, the signal semaphore
//!   becomes a sync_file imported into the dma-buf as a write (or read)
//!   fence (`DMA_BUF_IOCTL_IMPORT_SYNC_FILE`);
//! - [`Submission::wait_for_point`] / [`Submission::signal_point`]: the same
//!   for DRM syncobj timeline points, through sync_files.
//!
//! Where the driver lacks SYNC_FD semaphores or the kernel lacks the dma-buf
//! sync_file ioctls, the same calls wait on the CPU instead (before the
//! submission for waits, after it for signals) — slower, never wrong, and
//! invisible to the caller. [`Pending`] keeps every object the GPU uses
//! alive until the work is done.
//!
//! A driver's exported completion fence is trusted only if it is still
//! pending or the submission's own fence has signaled: lavapipe 25.0 hands
//! out an already-signaled sync_file while its queue still waits on an
//! imported fence, and then the CPU waits for the work instead.

use std::fmt;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use ash::vk;

use super::device::DeviceShared;
use super::{Device, Error, Result};
use crate::dmabuf::{Access, Dmabuf, ImplicitFence};
use crate::fd::owned_from_kernel;
use crate::sync::{SyncFile, Syncobj, WaitFor};

const SYNC_FD_SEMAPHORE: vk::ExternalSemaphoreHandleTypeFlags =
    vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD;
const SYNC_FD_FENCE: vk::ExternalFenceHandleTypeFlags = vk::ExternalFenceHandleTypeFlags::SYNC_FD;

fn timeout_ns(timeout: Option<Duration>) -> u64 {
    timeout.map_or(u64::MAX, |t| t.as_nanos().min(u64::MAX as u128) as u64)
}

/// A SYNC_FD the driver exported: `None` for -1 (already signaled).
fn from_driver(fd: i32) -> Option<SyncFile> {
    (fd >= 0).then(|| SyncFile::from_fd_unchecked(owned_from_kernel(fd)))
}

/// Give `fence`'s fd to the driver through `import`; the fd is released
/// only when the import succeeded (the driver then owns it).
fn to_driver(
    fence: SyncFile,
    call: &'static str,
    import: impl FnOnce(i32) -> ash::prelude::VkResult<()>,
) -> Result<()> {
    let fd = OwnedFd::from(fence);
    import(fd.as_raw_fd()).map_err(Error::vk(call))?;
    let _owned_by_vulkan = fd.into_raw_fd();
    Ok(())
}

/// A binary semaphore, destroyed on drop.
pub struct Semaphore {
    shared: Arc<DeviceShared>,
    raw: vk::Semaphore,
}

impl Drop for Semaphore {
    fn drop(&mut self) {
        // SAFETY: owners keep semaphores alive until the batches using them
        // completed (Pending holds them until its fence signals).
        unsafe { self.shared.raw.destroy_semaphore(self.raw, None) };
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Semaphore").field(&self.raw).finish()
    }
}

impl Semaphore {
    /// The raw handle.
    pub fn raw(&self) -> vk::Semaphore {
        self.raw
    }

    /// The fence of the pending signal operation as a sync_file
    /// (`vkGetSemaphoreFdKHR`, SYNC_FD). Like a wait, it resets the
    /// semaphore. `None` when the payload had already signaled (the driver
    /// returns fd -1: there is nothing left to wait for).
    ///
    /// The semaphore must have been created with
    /// [`Device::create_semaphore`]`(true)` and a signal submitted.
    pub fn export_sync_file(&self) -> Result<Option<SyncFile>> {
        let fns = self
            .shared
            .semaphore_fd
            .as_ref()
            .filter(|_| self.shared.sync_fd.semaphore_export);
        let fns = fns.ok_or(Error::NoSyncFd("export a semaphore as"))?;
        let info = vk::SemaphoreGetFdInfoKHR::default()
            .semaphore(self.raw)
            .handle_type(SYNC_FD_SEMAPHORE);
        // SAFETY: a semaphore of this device, created exportable.
        let fd =
            unsafe { fns.get_semaphore_fd(&info) }.map_err(Error::vk("vkGetSemaphoreFdKHR"))?;
        Ok((fd >= 0).then(|| SyncFile::from_fd_unchecked(owned_from_kernel(fd))))
    }

    /// Make the semaphore's next wait wait for `fence`
    /// (`vkImportSemaphoreFdKHR`, SYNC_FD, temporary). Vulkan takes the fd.
    pub fn import_sync_file(&self, fence: SyncFile) -> Result<()> {
        let fns = self
            .shared
            .semaphore_fd
            .as_ref()
            .filter(|_| self.shared.sync_fd.semaphore_import);
        let fns = fns.ok_or(Error::NoSyncFd("import into a semaphore"))?;
        to_driver(fence, "vkImportSemaphoreFdKHR", |fd| {
            let info = vk::ImportSemaphoreFdInfoKHR::default()
                .semaphore(self.raw)
                .flags(vk::SemaphoreImportFlags::TEMPORARY)
                .handle_type(SYNC_FD_SEMAPHORE)
                .fd(fd);
            // SAFETY: a sync_file fd for a semaphore of this device.
            unsafe { fns.import_semaphore_fd(&info) }
        })
    }
}

/// A fence, destroyed on drop (after the work it guards, see [`Pending`]).
pub struct Fence {
    shared: Arc<DeviceShared>,
    raw: vk::Fence,
}

impl Drop for Fence {
    fn drop(&mut self) {
        // SAFETY: owners drop fences only after their batch completed.
        unsafe { self.shared.raw.destroy_fence(self.raw, None) };
    }
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Fence").field(&self.raw).finish()
    }
}

impl Fence {
    /// The raw handle.
    pub fn raw(&self) -> vk::Fence {
        self.raw
    }

    /// Wait for the fence (`vkWaitForFences`); [`Error::Timeout`] after
    /// `timeout` (`None`: forever).
    pub fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        // SAFETY: a fence of this device.
        match unsafe {
            self.shared
                .raw
                .wait_for_fences(&[self.raw], true, timeout_ns(timeout))
        } {
            Ok(()) => Ok(()),
            Err(vk::Result::TIMEOUT) => Err(Error::Timeout {
                what: "a Vulkan fence",
                timeout: timeout.unwrap_or(Duration::MAX),
            }),
            Err(result) => Err(Error::Vk {
                call: "vkWaitForFences",
                result,
            }),
        }
    }

    /// Whether the fence has signaled (`vkGetFenceStatus`).
    pub fn is_signaled(&self) -> Result<bool> {
        // SAFETY: a fence of this device.
        unsafe { self.shared.raw.get_fence_status(self.raw) }.map_err(Error::vk("vkGetFenceStatus"))
    }

    /// Unsignal the fence (`vkResetFences`); it must not be in use.
    pub fn reset(&self) -> Result<()> {
        // SAFETY: a fence of this device, not pending (caller's contract).
        unsafe { self.shared.raw.reset_fences(&[self.raw]) }.map_err(Error::vk("vkResetFences"))
    }

    /// The fence's payload as a sync_file (`vkGetFenceFdKHR`, SYNC_FD);
    /// `None` when it had already signaled. Needs a fence made with
    /// [`Device::create_fence`]`(true)`, submitted.
    pub fn export_sync_file(&self) -> Result<Option<SyncFile>> {
        let fns = self
            .shared
            .fence_fd
            .as_ref()
            .filter(|_| self.shared.sync_fd.fence_export);
        let fns = fns.ok_or(Error::NoSyncFd("export a fence as"))?;
        let info = vk::FenceGetFdInfoKHR::default()
            .fence(self.raw)
            .handle_type(SYNC_FD_FENCE);
        // SAFETY: a fence of this device, created exportable.
        let fd = unsafe { fns.get_fence_fd(&info) }.map_err(Error::vk("vkGetFenceFdKHR"))?;
        Ok(from_driver(fd))
    }

    /// Make the fence signal when `fence` does (`vkImportFenceFdKHR`,
    /// SYNC_FD, temporary). Vulkan takes the fd.
    pub fn import_sync_file(&self, fence: SyncFile) -> Result<()> {
        let fns = self
            .shared
            .fence_fd
            .as_ref()
            .filter(|_| self.shared.sync_fd.fence_import);
        let fns = fns.ok_or(Error::NoSyncFd("import into a fence"))?;
        to_driver(fence, "vkImportFenceFdKHR", |fd| {
            let info = vk::ImportFenceFdInfoKHR::default()
                .fence(self.raw)
                .flags(vk::FenceImportFlags::TEMPORARY)
                .handle_type(SYNC_FD_FENCE)
                .fd(fd);
            // SAFETY: a sync_file fd for a fence of this device.
            unsafe { fns.import_fence_fd(&info) }
        })
    }
}

impl Device {
    /// A binary semaphore; with `exportable`, created to give SYNC_FD
    /// sync_files where the driver can.
    pub fn create_semaphore(&self, exportable: bool) -> Result<Semaphore> {
        let mut export = vk::ExportSemaphoreCreateInfo::default().handle_types(SYNC_FD_SEMAPHORE);
        let mut info = vk::SemaphoreCreateInfo::default();
        if exportable && self.shared.sync_fd.semaphore_export {
            info = info.push_next(&mut export);
        }
        // SAFETY: valid create info.
        let raw = unsafe { self.shared.raw.create_semaphore(&info, None) }
            .map_err(Error::vk("vkCreateSemaphore"))?;
        Ok(Semaphore {
            shared: self.shared.clone(),
            raw,
        })
    }

    /// An unsignaled fence; with `exportable`, created to give SYNC_FD
    /// sync_files where the driver can.
    pub fn create_fence(&self, exportable: bool) -> Result<Fence> {
        let mut export = vk::ExportFenceCreateInfo::default().handle_types(SYNC_FD_FENCE);
        let mut info = vk::FenceCreateInfo::default();
        if exportable && self.shared.sync_fd.fence_export {
            info = info.push_next(&mut export);
        }
        // SAFETY: valid create info.
        let raw = unsafe { self.shared.raw.create_fence(&info, None) }
            .map_err(Error::vk("vkCreateFence"))?;
        Ok(Fence {
            shared: self.shared.clone(),
            raw,
        })
    }

    /// A semaphore that a submission waits on before `access`ing `dmabuf`:
    /// the dma-buf's implicit fences for that access, imported as SYNC_FD.
    /// `None` when the driver or kernel cannot, in which case the fences
    /// were waited for on the CPU (at most `timeout`) before returning.
    pub fn semaphore_for_dmabuf(
        &self,
        dmabuf: &Dmabuf,
        access: Access,
        timeout: Option<Duration>,
    ) -> Result<Option<Semaphore>> {
        let fence = dmabuf.implicit_fence(access)?;
        match fence {
            ImplicitFence::SyncFile(sync_file) => self.semaphore_for_sync_file(sync_file, timeout),
            poll => {
                poll.wait(timeout)?;
                Ok(None)
            }
        }
    }

    /// A semaphore that waits for `fence` (temporary SYNC_FD import);
    /// `None` when the driver cannot import, in which case `fence` was
    /// waited for on the CPU (at most `timeout`) before returning.
    pub fn semaphore_for_sync_file(
        &self,
        fence: SyncFile,
        timeout: Option<Duration>,
    ) -> Result<Option<Semaphore>> {
        if !self.shared.sync_fd.semaphore_import {
            fence.wait(timeout)?;
            return Ok(None);
        }
        let semaphore = self.create_semaphore(false)?;
        semaphore.import_sync_file(fence)?;
        Ok(Some(semaphore))
    }

    /// Start recording a [`Submission`].
    pub fn submission(&self) -> Result<Submission<'_>> {
        Submission::new(self)
    }
}

/// One command buffer to submit, with the fences it waits for and the
/// dma-bufs and timeline points that wait for it.
///
/// Record into [`Submission::cmd`]; then [`Submission::submit`]. See the
/// [module docs](self) for what each call does and its fallback.
pub struct Submission<'a> {
    device: &'a Device,
    pool: vk::CommandPool,
    cmd: vk::CommandBuffer,
    waits: Vec<(Semaphore, vk::PipelineStageFlags)>,
    signal_dmabufs: Vec<(&'a Dmabuf, Access)>,
    signal_points: Vec<(&'a Syncobj, u64)>,
    want_sync_file: bool,
    timeout: Option<Duration>,
}

impl Drop for Submission<'_> {
    fn drop(&mut self) {
        if self.pool != vk::CommandPool::null() {
            // SAFETY: never submitted (submit() takes the pool away).
            unsafe { self.device.shared.raw.destroy_command_pool(self.pool, None) };
        }
    }
}

impl<'a> Submission<'a> {
    fn new(device: &'a Device) -> Result<Self> {
        let raw = &device.shared.raw;
        let info = vk::CommandPoolCreateInfo::default()
            .flags(vk::CommandPoolCreateFlags::TRANSIENT)
            .queue_family_index(device.shared.queue_family);
        // SAFETY: valid create info for this device's queue family.
        let pool = unsafe { raw.create_command_pool(&info, None) }
            .map_err(Error::vk("vkCreateCommandPool"))?;
        let mut job = Submission {
            device,
            pool,
            cmd: vk::CommandBuffer::null(),
            waits: Vec::new(),
            signal_dmabufs: Vec::new(),
            signal_points: Vec::new(),
            want_sync_file: false,
            timeout: None,
        };
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: the pool is live; one primary buffer is asked.
        job.cmd = unsafe { raw.allocate_command_buffers(&alloc) }
            .map_err(Error::vk("vkAllocateCommandBuffers"))?[0];
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: a fresh command buffer.
        unsafe { raw.begin_command_buffer(job.cmd, &begin) }
            .map_err(Error::vk("vkBeginCommandBuffer"))?;
        Ok(job)
    }

    /// The command buffer to record into (recording state).
    pub fn cmd(&self) -> vk::CommandBuffer {
        self.cmd
    }

    /// Bound every CPU wait of the fallback paths (default: unbounded);
    /// past it they fail with a timeout error.
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = Some(timeout);
        self
    }

    /// Make the work wait, at `stage`, for the fences `access` to `dmabuf`
    /// must wait for: writers for [`Access::Read`], everyone otherwise.
    pub fn wait_for_dmabuf(
        &mut self,
        dmabuf: &Dmabuf,
        access: Access,
        stage: vk::PipelineStageFlags,
    ) -> Result<&mut Self> {
        if let Some(s) = self
            .device
            .semaphore_for_dmabuf(dmabuf, access, self.timeout)?
        {
            self.waits.push((s, stage));
        }
        Ok(self)
    }

    /// Make the work wait, at `stage`, for `fence`.
    pub fn wait_for_sync_file(
        &mut self,
        fence: SyncFile,
        stage: vk::PipelineStageFlags,
    ) -> Result<&mut Self> {
        if let Some(s) = self.device.semaphore_for_sync_file(fence, self.timeout)? {
            self.waits.push((s, stage));
        }
        Ok(self)
    }

    /// Make the work wait, at `stage`, for timeline `point` of `syncobj`
    /// (waiting on the CPU, within the timeout, until a fence for it has
    /// been submitted).
    pub fn wait_for_point(
        &mut self,
        syncobj: &Syncobj,
        point: u64,
        stage: vk::PipelineStageFlags,
    ) -> Result<&mut Self> {
        syncobj.wait(point, WaitFor::Available, self.timeout)?;
        let fence = syncobj.export_sync_file(point)?;
        self.wait_for_sync_file(fence, stage)
    }

    /// After the work, make implicit-sync users of `dmabuf` wait for it:
    /// as a write fence if `access` writes, else as a read fence.
    pub fn signal_dmabuf(&mut self, dmabuf: &'a Dmabuf, access: Access) -> &mut Self {
        self.signal_dmabufs.push((dmabuf, access));
        self
    }

    /// After the work, signal timeline `point` of `syncobj` when it
    /// completes.
    pub fn signal_point(&mut self, syncobj: &'a Syncobj, point: u64) -> &mut Self {
        self.signal_points.push((syncobj, point));
        self
    }

    /// Ask [`Pending::take_sync_file`] for a sync_file of the work's
    /// completion (for explicit-sync consumers, e.g. a compositor).
    pub fn signal_sync_file(&mut self) -> &mut Self {
        self.want_sync_file = true;
        self
    }

    /// End the command buffer, submit it, and hand its completion to every
    /// signal target. The returned [`Pending`] keeps the work's objects
    /// alive; dropping it waits for the work.
    pub fn submit(mut self) -> Result<Pending> {
        let shared = self.device.shared.clone();
        // SAFETY: the buffer is recording (begun in new()).
        unsafe { shared.raw.end_command_buffer(self.cmd) }
            .map_err(Error::vk("vkEndCommandBuffer"))?;
        let needs_signal = self.want_sync_file
            || !self.signal_dmabufs.is_empty()
            || !self.signal_points.is_empty();
        let done = if needs_signal && shared.sync_fd.semaphore_export {
            Some(self.device.create_semaphore(true)?)
        } else {
            None
        };
        let fence = self.device.create_fence(false)?;
        let wait_raw: Vec<_> = self.waits.iter().map(|(s, _)| s.raw).collect();
        let stages: Vec<_> = self.waits.iter().map(|(_, st)| *st).collect();
        let signal_raw: Vec<_> = done.iter().map(|s| s.raw).collect();
        let cmds = [self.cmd];
        let submit = vk::SubmitInfo::default()
            .wait_semaphores(&wait_raw)
            .wait_dst_stage_mask(&stages)
            .command_buffers(&cmds)
            .signal_semaphores(&signal_raw);
        shared.queue_submit(&[submit], fence.raw)?;

        // From here on the GPU may use everything: Pending owns it all, and
        // its drop waits for the fence, even when handing off fails below.
        let pool = std::mem::replace(&mut self.pool, vk::CommandPool::null());
        let mut keep: Vec<Semaphore> = self.waits.drain(..).map(|(s, _)| s).collect();
        let mut pending = Pending {
            shared,
            fence,
            pool,
            keep: Vec::new(),
            sync_file: None,
        };
        let mut completion = match &done {
            Some(s) => s.export_sync_file()?,
            None => None,
        };
        if needs_signal && !honest(completion.as_ref(), &pending.fence)? {
            // No fence, or one the driver says has signaled while the work
            // has not (lavapipe, when its queue is blocked on a wait): the
            // CPU waits for the work itself, and nothing is left to attach.
            pending.fence.wait(self.timeout)?;
            completion = None;
        }
        keep.extend(done);
        pending.keep = keep;
        if let Some(sync_file) = &completion {
            for (dmabuf, access) in &self.signal_dmabufs {
                dmabuf.attach_fence(sync_file, *access, self.timeout)?;
            }
        }
        for (syncobj, point) in &self.signal_points {
            match &completion {
                Some(sync_file) => syncobj.import_sync_file(*point, sync_file)?,
                None => syncobj.signal(*point)?,
            }
        }
        if self.want_sync_file {
            pending.sync_file = completion;
        }
        Ok(pending)
    }
}

/// Whether an exported completion fence can stand for the work: it is still
/// pending, or the work is really done.
fn honest(completion: Option<&SyncFile>, work: &Fence) -> Result<bool> {
    match completion {
        Some(fence) if !fence.is_signaled()? => Ok(true),
        _ => work.is_signaled(),
    }
}

/// Submitted work: its fence, and every object it uses, kept until it is
/// done. Dropping it waits for the work (unbounded) before freeing them.
pub struct Pending {
    shared: Arc<DeviceShared>,
    fence: Fence,
    pool: vk::CommandPool,
    keep: Vec<Semaphore>,
    sync_file: Option<SyncFile>,
}

impl Pending {
    /// Wait for the work; [`Error::Timeout`] after `timeout`.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        self.fence.wait(timeout)
    }

    /// Whether the work is done.
    pub fn is_done(&self) -> Result<bool> {
        self.fence.is_signaled()
    }

    /// The completion as a sync_file, if [`Submission::signal_sync_file`]
    /// asked for one. `None` also when the work had already finished when
    /// submitted, or the driver cannot export (the work is then done).
    pub fn take_sync_file(&mut self) -> Option<SyncFile> {
        self.sync_file.take()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.fence.wait(None).is_err() {
            // A lost device: freeing in-use objects would be worse than
            // leaking them.
            std::mem::forget(std::mem::take(&mut self.keep));
            return;
        }
        // SAFETY: the work using the pool is complete.
        unsafe { self.shared.raw.destroy_command_pool(self.pool, None) };
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("fence", &self.fence)
            .finish()
    }
}
