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
//! Nothing here is created per frame in the steady state: a submission
//! takes a command pool, command buffer and fence, and semaphores, from the
//! device's pool, and they go back to it once the work's fence has
//! signaled (checked without blocking whenever a new submission starts).
//! Dropping a [`Pending`] never waits: unfinished work is retired to the
//! device, which keeps the images and views the work used
//! ([`Submission::uses`]) alive until it is done.
//!
//! Every CPU wait of a submission is bounded: by [`DEFAULT_TIMEOUT`] unless
//! [`Submission::timeout`] says otherwise (`None` being the caller's
//! explicit choice of no limit).
//!
//! On a software device (`VK_PHYSICAL_DEVICE_TYPE_CPU`: lavapipe) a
//! signal waits on the CPU too: its sync_file export finishes the work
//! before it returns, so the submission's fence is waited for instead (the
//! same wait, one call into the driver's queue thread fewer, and bounded by
//! the submission's timeout where the export's was not).
//!
//! A driver's exported completion fence is trusted only if it is still
//! pending or the submission's own fence has signaled: lavapipe 25.0 (whose
//! exports are no longer asked for, above) handed out an already-signaled
//! sync_file while its queue still waited on an imported fence; a driver
//! that does the same gets the CPU wait for the work instead.

use std::fmt;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use ash::vk;

use super::device::{DeviceShared, KeepAlive, PooledSemaphore, Retired, Slot};
use super::image::{ImageResources, Owner};
use super::{Device, Error, Result};
use crate::dmabuf::{Access, Dmabuf, ImplicitFence};
use crate::fd::owned_from_kernel;
use crate::sync::{SyncFile, Syncobj, WaitFor};

const SYNC_FD_SEMAPHORE: vk::ExternalSemaphoreHandleTypeFlags =
    vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD;
const SYNC_FD_FENCE: vk::ExternalFenceHandleTypeFlags = vk::ExternalFenceHandleTypeFlags::SYNC_FD;

/// The bound on a submission's CPU waits unless [`Submission::timeout`]
/// sets another: long enough for software rendering of large frames under
/// emulation, short enough that a fence that never signals (a timeline
/// point never submitted, a hung producer) becomes an error.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Something GPU work uses that must outlive it: an [`Image`] or
/// [`ImageView`]. See [`Submission::uses`].
///
/// [`Image`]: super::Image
/// [`ImageView`]: super::ImageView
pub trait Resource: sealed::Resource {}

pub(crate) mod sealed {
    use super::KeepAlive;

    /// What [`Resource`](super::Resource) needs, out of users' reach.
    pub trait Resource {
        /// A reference that keeps the Vulkan objects alive.
        fn keep_alive(&self) -> KeepAlive;

        /// Which device the objects belong to (the address of its shared
        /// state: compared, never dereferenced).
        fn device_id(&self) -> *const ();
    }
}

fn timeout_ns(timeout: Option<Duration>) -> u64 {
    timeout.map_or(u64::MAX, |t| t.as_nanos().min(u64::MAX as u128) as u64)
}

/// A SYNC_FD the driver exported: `None` for -1 (already signaled).
fn from_driver(fd: i32) -> Option<SyncFile> {
    (fd >= 0).then(|| SyncFile::from_fd_unchecked(owned_from_kernel(fd)))
}

/// Give `fence`'s fd (`None`: -1, already signalled) to the driver through
/// `import`; the fd is released only when the import succeeded (the driver
/// then owns it).
fn to_driver(
    fence: impl Into<Option<SyncFile>>,
    call: &'static str,
    import: impl FnOnce(i32) -> ash::prelude::VkResult<()>,
) -> Result<()> {
    let Some(fence) = fence.into() else {
        // -1: a payload that has already signalled (SYNC_FD only).
        return import(-1).map_err(Error::vk(call));
    };
    let fd = OwnedFd::from(fence);
    import(fd.as_raw_fd()).map_err(Error::vk(call))?;
    let _owned_by_vulkan = fd.into_raw_fd();
    Ok(())
}

/// A binary semaphore, destroyed on drop.
///
/// Import and reset need `&mut self` (Vulkan requires external
/// synchronization of the object); exporting needs a semaphore created
/// with [`Device::create_exportable_semaphore`] ([`Error::NotExportable`]
/// otherwise).
pub struct Semaphore {
    shared: Arc<DeviceShared>,
    raw: vk::Semaphore,
    exportable: bool,
}

impl Drop for Semaphore {
    fn drop(&mut self) {
        // SAFETY: submitting it needs the unsafe `Device::submit`, whose
        // contract keeps it alive until that work completed.
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
    /// [`Error::NotExportable`] for a semaphore not created exportable,
    /// [`Error::NoSyncFd`] where the driver cannot.
    ///
    /// # Safety
    /// A signal operation for the semaphore must have been submitted (with
    /// [`Device::submit`]) or it must be signaled, as
    /// `VkSemaphoreGetFdInfoKHR` requires for SYNC_FD.
    pub unsafe fn export_sync_file(&mut self) -> Result<Option<SyncFile>> {
        if !self.exportable {
            return Err(Error::NotExportable("semaphore"));
        }
        // SAFETY: forwarded to the caller.
        unsafe { export_semaphore(&self.shared, self.raw) }
    }

    /// Make the semaphore's next wait wait for `fence`
    /// (`vkImportSemaphoreFdKHR`, SYNC_FD, temporary). Vulkan takes the fd.
    pub fn import_sync_file(&mut self, fence: SyncFile) -> Result<()> {
        import_semaphore(&self.shared, self.raw, fence)
    }
}

/// `vkGetSemaphoreFdKHR` (SYNC_FD) on `raw`.
///
/// # Safety
/// `raw` is an exportable semaphore of this device with a pending signal
/// operation, or signaled.
unsafe fn export_semaphore(shared: &DeviceShared, raw: vk::Semaphore) -> Result<Option<SyncFile>> {
    let fns = shared
        .semaphore_fd
        .as_ref()
        .filter(|_| shared.sync_fd.semaphore_export);
    let fns = fns.ok_or(Error::NoSyncFd("export a semaphore as"))?;
    let info = vk::SemaphoreGetFdInfoKHR::default()
        .semaphore(raw)
        .handle_type(SYNC_FD_SEMAPHORE);
    // SAFETY: the caller's contract.
    let fd = unsafe { fns.get_semaphore_fd(&info) }.map_err(Error::vk("vkGetSemaphoreFdKHR"))?;
    Ok(from_driver(fd))
}

/// `vkImportSemaphoreFdKHR` (SYNC_FD, temporary) of `fence` into `raw`, a
/// semaphore of this device that no pending work uses.
fn import_semaphore(shared: &DeviceShared, raw: vk::Semaphore, fence: SyncFile) -> Result<()> {
    import_semaphore_or_signaled(shared, raw, Some(fence))
}

/// [`import_semaphore`]; `None` imports a payload that has already
/// signalled (fd -1, which SYNC_FD allows).
fn import_semaphore_or_signaled(
    shared: &DeviceShared,
    raw: vk::Semaphore,
    fence: Option<SyncFile>,
) -> Result<()> {
    let fns = shared
        .semaphore_fd
        .as_ref()
        .filter(|_| shared.sync_fd.semaphore_import);
    let fns = fns.ok_or(Error::NoSyncFd("import into a semaphore"))?;
    to_driver(fence, "vkImportSemaphoreFdKHR", |fd| {
        let info = vk::ImportSemaphoreFdInfoKHR::default()
            .semaphore(raw)
            .flags(vk::SemaphoreImportFlags::TEMPORARY)
            .handle_type(SYNC_FD_SEMAPHORE)
            .fd(fd);
        // SAFETY: a sync_file fd for a semaphore of this device that no
        // pending work uses (callers: `&mut Semaphore`, or a pooled one).
        unsafe { fns.import_semaphore_fd(&info) }
    })
}

/// A fence, destroyed on drop.
///
/// Import and reset need `&mut self`; exporting needs a fence created with
/// [`Device::create_exportable_fence`] ([`Error::NotExportable`]
/// otherwise).
pub struct Fence {
    shared: Arc<DeviceShared>,
    raw: vk::Fence,
    exportable: bool,
}

impl Drop for Fence {
    fn drop(&mut self) {
        // SAFETY: submitting it needs the unsafe `Device::submit`, whose
        // contract keeps it alive until that work completed.
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
    /// `timeout` (`None`: no limit, the caller's explicit choice).
    pub fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        wait_fence(&self.shared, self.raw, timeout)
    }

    /// Whether the fence has signaled (`vkGetFenceStatus`).
    pub fn is_signaled(&self) -> Result<bool> {
        // SAFETY: a fence of this device.
        unsafe { self.shared.raw.get_fence_status(self.raw) }.map_err(Error::vk("vkGetFenceStatus"))
    }

    /// Unsignal the fence (`vkResetFences`). The only way to give it to
    /// the GPU is the `unsafe` [`Device::submit`], whose contract forbids
    /// resetting it while that work is pending; `&mut self` keeps other
    /// users of this object out.
    pub fn reset(&mut self) -> Result<()> {
        // SAFETY: a fence of this device; `&mut self` excludes concurrent
        // use of the handle through this object, and the submit contract
        // forbids resetting while its work is pending.
        unsafe { self.shared.raw.reset_fences(&[self.raw]) }.map_err(Error::vk("vkResetFences"))
    }

    /// The fence's payload as a sync_file (`vkGetFenceFdKHR`, SYNC_FD);
    /// `None` when it had already signaled.
    ///
    /// # Safety
    /// The fence must be signaled or have a signal operation pending (given
    /// to [`Device::submit`]), as `VkFenceGetFdInfoKHR` requires.
    pub unsafe fn export_sync_file(&mut self) -> Result<Option<SyncFile>> {
        if !self.exportable {
            return Err(Error::NotExportable("fence"));
        }
        let fns = self
            .shared
            .fence_fd
            .as_ref()
            .filter(|_| self.shared.sync_fd.fence_export);
        let fns = fns.ok_or(Error::NoSyncFd("export a fence as"))?;
        let info = vk::FenceGetFdInfoKHR::default()
            .fence(self.raw)
            .handle_type(SYNC_FD_FENCE);
        // SAFETY: an exportable fence of this device, signaled or pending
        // (the caller's contract).
        let fd = unsafe { fns.get_fence_fd(&info) }.map_err(Error::vk("vkGetFenceFdKHR"))?;
        Ok(from_driver(fd))
    }

    /// Make the fence signal when `fence` does (`vkImportFenceFdKHR`,
    /// SYNC_FD, temporary). Vulkan takes the fd.
    pub fn import_sync_file(&mut self, fence: SyncFile) -> Result<()> {
        // `&mut self` and the submit contract keep it out of pending work.
        import_fence(&self.shared, self.raw, Some(fence))
    }
}

/// `vkImportFenceFdKHR` (SYNC_FD, temporary) of `fence` (`None`: already
/// signalled, fd -1) into `raw`, a fence of this device that no pending
/// work uses.
fn import_fence(shared: &DeviceShared, raw: vk::Fence, fence: Option<SyncFile>) -> Result<()> {
    let fns = shared
        .fence_fd
        .as_ref()
        .filter(|_| shared.sync_fd.fence_import);
    let fns = fns.ok_or(Error::NoSyncFd("import into a fence"))?;
    to_driver(fence, "vkImportFenceFdKHR", |fd| {
        let info = vk::ImportFenceFdInfoKHR::default()
            .fence(raw)
            .flags(vk::FenceImportFlags::TEMPORARY)
            .handle_type(SYNC_FD_FENCE)
            .fd(fd);
        // SAFETY: a sync_file fd (or -1) for a fence of this device that
        // no pending work uses (the callers' contract).
        unsafe { fns.import_fence_fd(&info) }
    })
}

/// `vkWaitForFences` on one fence of this device.
fn wait_fence(shared: &DeviceShared, fence: vk::Fence, timeout: Option<Duration>) -> Result<()> {
    // SAFETY: a fence of this device.
    match unsafe {
        shared
            .raw
            .wait_for_fences(&[fence], true, timeout_ns(timeout))
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

impl Device {
    /// A binary semaphore.
    pub fn create_semaphore(&self) -> Result<Semaphore> {
        self.semaphore(false)
    }

    /// A binary semaphore created to give SYNC_FD sync_files
    /// ([`Error::NoSyncFd`] where the driver cannot).
    pub fn create_exportable_semaphore(&self) -> Result<Semaphore> {
        if !self.shared.sync_fd.semaphore_export {
            return Err(Error::NoSyncFd("export a semaphore as"));
        }
        self.semaphore(true)
    }

    fn semaphore(&self, exportable: bool) -> Result<Semaphore> {
        let mut export = vk::ExportSemaphoreCreateInfo::default().handle_types(SYNC_FD_SEMAPHORE);
        let mut info = vk::SemaphoreCreateInfo::default();
        if exportable {
            info = info.push_next(&mut export);
        }
        // SAFETY: valid create info.
        let raw = unsafe { self.shared.raw.create_semaphore(&info, None) }
            .map_err(Error::vk("vkCreateSemaphore"))?;
        Ok(Semaphore {
            shared: self.shared.clone(),
            raw,
            exportable,
        })
    }

    /// An unsignaled fence.
    pub fn create_fence(&self) -> Result<Fence> {
        self.fence(false)
    }

    /// An unsignaled fence created to give SYNC_FD sync_files
    /// ([`Error::NoSyncFd`] where the driver cannot).
    pub fn create_exportable_fence(&self) -> Result<Fence> {
        if !self.shared.sync_fd.fence_export {
            return Err(Error::NoSyncFd("export a fence as"));
        }
        self.fence(true)
    }

    fn fence(&self, exportable: bool) -> Result<Fence> {
        let mut export = vk::ExportFenceCreateInfo::default().handle_types(SYNC_FD_FENCE);
        let mut info = vk::FenceCreateInfo::default();
        if exportable {
            info = info.push_next(&mut export);
        }
        // SAFETY: valid create info.
        let raw = unsafe { self.shared.raw.create_fence(&info, None) }
            .map_err(Error::vk("vkCreateFence"))?;
        Ok(Fence {
            shared: self.shared.clone(),
            raw,
            exportable,
        })
    }

    /// Start recording a [`Submission`].
    pub fn submission(&self) -> Result<Submission<'_>> {
        Submission::new(self)
    }

    /// Make `semaphore` — a binary semaphore of this device that winsys
    /// did not create (an app's, given to `vkAcquireNextImageKHR`) —
    /// signal when `fence` does (`None`: at once): a temporary SYNC_FD
    /// import, as a window system's acquire does. Vulkan takes the fd.
    /// [`Error::NoSyncFd`] where the driver cannot import.
    ///
    /// # Safety
    ///
    /// `semaphore` must be a live binary semaphore of this device with no
    /// pending signal or wait operation, not used by another thread during
    /// the call (`vkImportSemaphoreFdKHR`'s rules).
    pub unsafe fn import_into_semaphore(
        &self,
        semaphore: vk::Semaphore,
        fence: Option<SyncFile>,
    ) -> Result<()> {
        import_semaphore_or_signaled(&self.shared, semaphore, fence)
    }

    /// [`Device::import_into_semaphore`] for a fence winsys did not create.
    ///
    /// # Safety
    ///
    /// `fence` must be a live fence of this device that no pending work
    /// signals, not used by another thread during the call
    /// (`vkImportFenceFdKHR`'s rules).
    pub unsafe fn import_into_fence(&self, fence: vk::Fence, sync: Option<SyncFile>) -> Result<()> {
        import_fence(&self.shared, fence, sync)
    }
}

/// One command buffer to submit, with the fences it waits for and the
/// dma-bufs and timeline points that wait for it.
///
/// Record into [`Submission::cmd`] (registering every image and view the
/// commands use with [`Submission::uses`]; [`Image::cmd_acquire`] and
/// [`Image::cmd_release`] do that themselves); then
/// [`Submission::submit`]. See the [module docs](self) for what each call
/// does and its fallback.
///
/// [`Image::cmd_acquire`]: super::Image::cmd_acquire
/// [`Image::cmd_release`]: super::Image::cmd_release
pub struct Submission<'a> {
    device: &'a Device,
    slot: Option<Slot>,
    waits: Vec<(PooledSemaphore, vk::PipelineStageFlags)>,
    /// Semaphores of the caller's to wait for ([`Submission::wait_semaphore`]).
    foreign_waits: Vec<(vk::Semaphore, vk::PipelineStageFlags)>,
    /// The queue to submit to, if not the device's.
    queue: Option<vk::Queue>,
    keep: Vec<KeepAlive>,
    /// Ownership states before the transitions recorded here, restored
    /// if the submission never reaches the GPU.
    transitions: Vec<(Arc<ImageResources>, Owner)>,
    signal_dmabufs: Vec<(Dmabuf, Access)>,
    signal_points: Vec<(&'a Syncobj, u64)>,
    want_sync_file: bool,
    timeout: Option<Duration>,
}

impl Drop for Submission<'_> {
    fn drop(&mut self) {
        let shared = &self.device.shared;
        if let Some(slot) = self.slot.take() {
            // Never submitted: nothing of it is in use, and the images are
            // where they were before the recorded barriers.
            for (image, before) in self.transitions.drain(..).rev() {
                image.roll_back(before);
            }
            shared.return_unsubmitted(slot);
            // Their temporary payloads were never consumed: not reusable.
            for (s, _) in self.waits.drain(..) {
                shared.destroy_semaphore(s);
            }
        }
    }
}

impl<'a> Submission<'a> {
    fn new(device: &'a Device) -> Result<Self> {
        let shared = &device.shared;
        let slot = shared.take_slot()?;
        let job = Submission {
            device,
            slot: Some(slot),
            waits: Vec::new(),
            foreign_waits: Vec::new(),
            queue: None,
            keep: Vec::new(),
            transitions: Vec::new(),
            signal_dmabufs: Vec::new(),
            signal_points: Vec::new(),
            want_sync_file: false,
            timeout: Some(DEFAULT_TIMEOUT),
        };
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: the slot's buffer is in the initial state (new, or its
        // pool reset when it was recycled) and only this submission has it.
        unsafe { shared.raw.begin_command_buffer(slot.cmd, &begin) }
            .map_err(Error::vk("vkBeginCommandBuffer"))?;
        Ok(job)
    }

    /// The command buffer to record into (recording state until
    /// [`Submission::submit`]).
    pub fn cmd(&self) -> vk::CommandBuffer {
        self.slot.map_or(vk::CommandBuffer::null(), |s| s.cmd)
    }

    /// Keep `resource` (an image or view the recorded commands use) alive
    /// until the work is done, however soon the caller drops it.
    /// [`Error::WrongDevice`] for another device's resource.
    pub fn uses(&mut self, resource: &impl Resource) -> Result<&mut Self> {
        self.check_device_id(resource.device_id())?;
        self.keep.push(resource.keep_alive());
        Ok(self)
    }

    pub(crate) fn check_device(&self, of: &Arc<DeviceShared>) -> Result<()> {
        self.check_device_id(Arc::as_ptr(of).cast())
    }

    fn check_device_id(&self, id: *const ()) -> Result<()> {
        match std::ptr::eq(id, Arc::as_ptr(&self.device.shared).cast()) {
            true => Ok(()),
            false => Err(Error::WrongDevice("an image or view")),
        }
    }

    pub(crate) fn transitioned(&mut self, image: Arc<ImageResources>, before: Owner) {
        self.transitions.push((image, before));
    }

    /// Bound every CPU wait of this submission (the fallback paths, and
    /// waiting for a timeline point's fence to be submitted): `None` for no
    /// limit. Default: [`DEFAULT_TIMEOUT`].
    pub fn timeout(&mut self, timeout: Option<Duration>) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// Make the work wait, at `stage`, for the fences `access` to `dmabuf`
    /// must wait for: writers for [`Access::Read`], everyone otherwise.
    /// Where the driver or kernel cannot, waits for them on the CPU now.
    pub fn wait_for_dmabuf(
        &mut self,
        dmabuf: &Dmabuf,
        access: Access,
        stage: vk::PipelineStageFlags,
    ) -> Result<&mut Self> {
        match dmabuf.implicit_fence(access)? {
            ImplicitFence::SyncFile(fence) => self.wait_for_sync_file(fence, stage),
            poll => {
                poll.wait(self.timeout)?;
                Ok(self)
            }
        }
    }

    /// Make the work wait, at `stage`, for `fence` (a pooled semaphore with
    /// the sync_file imported temporarily); where the driver cannot import,
    /// waits for it on the CPU now. A fence that has already signalled
    /// (one poll) costs nothing more: there is nothing left to wait for.
    pub fn wait_for_sync_file(
        &mut self,
        fence: SyncFile,
        stage: vk::PipelineStageFlags,
    ) -> Result<&mut Self> {
        if fence.is_signaled()? {
            return Ok(self);
        }
        let shared = &self.device.shared;
        if !shared.sync_fd.semaphore_import {
            fence.wait(self.timeout)?;
            return Ok(self);
        }
        let semaphore = shared.take_semaphore(false)?;
        if let Err(e) = import_semaphore(shared, semaphore.raw, fence) {
            shared.return_semaphore(semaphore);
            return Err(e);
        }
        self.waits.push((semaphore, stage));
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

    /// Make the work wait, at `stage`, for `semaphore`, a binary semaphore
    /// winsys did not create (e.g. the wait semaphores an app gives
    /// `vkQueuePresentKHR`). winsys neither resets nor destroys it.
    ///
    /// # Safety
    ///
    /// `semaphore` must be a binary semaphore of this device whose signal
    /// operation has been submitted (or will be, before this submission),
    /// that no other wait consumes, and that stays alive until this work
    /// is done (`vkQueueSubmit`'s rules for `pWaitSemaphores`).
    pub unsafe fn wait_semaphore(
        &mut self,
        semaphore: vk::Semaphore,
        stage: vk::PipelineStageFlags,
    ) -> &mut Self {
        self.foreign_waits.push((semaphore, stage));
        self
    }

    /// Submit to `queue` instead of the device's own queue (e.g. the queue
    /// an app gives `vkQueuePresentKHR`).
    ///
    /// # Safety
    ///
    /// `queue` must be a queue of this device in its
    /// [`Device::queue_family`], and no other thread may use it while
    /// [`Submission::submit`] runs (`vkQueueSubmit`'s external
    /// synchronization).
    pub unsafe fn on_queue(&mut self, queue: vk::Queue) -> &mut Self {
        self.queue = Some(queue);
        self
    }

    /// After the work, make implicit-sync users of `dmabuf` wait for it:
    /// as a write fence if `access` writes, else as a read fence.
    pub fn signal_dmabuf(&mut self, dmabuf: &Dmabuf, access: Access) -> &mut Self {
        self.signal_dmabufs.push((dmabuf.clone(), access));
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
    /// alive; dropping it does not wait (the device recycles them once the
    /// work is done).
    pub fn submit(mut self) -> Result<Pending> {
        let shared = self.device.shared.clone();
        let slot = self.slot.expect("a submission holds its slot until submit");
        // SAFETY: the buffer is recording (begun in new()).
        unsafe { shared.raw.end_command_buffer(slot.cmd) }
            .map_err(Error::vk("vkEndCommandBuffer"))?;
        let needs_signal = self.want_sync_file
            || !self.signal_dmabufs.is_empty()
            || !self.signal_points.is_empty();
        // A software device (lavapipe) finishes the work on the CPU to
        // export it: the fence wait below is that same wait, without the
        // export's round trip to the driver's queue thread (Mesa's WSI
        // waits the same way for a software device).
        let software = shared.info.device_type == vk::PhysicalDeviceType::CPU;
        let done = if needs_signal && shared.sync_fd.semaphore_export && !software {
            Some(shared.take_semaphore(true)?)
        } else {
            None
        };
        let all_waits = || {
            let pooled = self.waits.iter().map(|(s, st)| (s.raw, *st));
            pooled.chain(self.foreign_waits.iter().copied())
        };
        let wait_raw: Vec<_> = all_waits().map(|(s, _)| s).collect();
        let stages: Vec<_> = all_waits().map(|(_, st)| st).collect();
        let signal_raw: Vec<_> = done.iter().map(|s| s.raw).collect();
        let cmds = [slot.cmd];
        let submit = vk::SubmitInfo::default()
            .wait_semaphores(&wait_raw)
            .wait_dst_stage_mask(&stages)
            .command_buffers(&cmds)
            .signal_semaphores(&signal_raw);
        if let Err(e) = shared.queue_submit_on(self.queue, &[submit], slot.fence) {
            if let Some(d) = done {
                shared.return_semaphore(d);
            }
            // Drop rolls the image transitions back and gives the slot back.
            return Err(e);
        }
        self.transitions.clear();

        // From here on the GPU may use everything: Pending owns it all and
        // retires it to the device, so nothing is freed or reused before
        // the fence signals, even when handing off fails below.
        self.slot = None;
        let mut semaphores: Vec<PooledSemaphore> = self.waits.drain(..).map(|(s, _)| s).collect();
        semaphores.extend(done);
        let mut pending = Pending {
            shared: shared.clone(),
            _device: self.device.clone(),
            work: Some(Retired {
                slot,
                semaphores,
                discard: Vec::new(),
                keep: std::mem::take(&mut self.keep),
            }),
            sync_file: None,
        };
        let mut completion = match done {
            // SAFETY: exportable, and its signal operation was just
            // submitted.
            Some(d) => match unsafe { export_semaphore(&shared, d.raw) } {
                Ok(c) => c,
                Err(e) => {
                    // Not reset by an export: it will be left signaled,
                    // so it must not go back to the pool.
                    pending.discard_semaphore(d);
                    return Err(e);
                }
            },
            None => None,
        };
        let still_pending = match &completion {
            Some(fence) => !fence.is_signaled()?,
            None => false,
        };
        if needs_signal && !still_pending {
            // No fence (none asked of a software device, or the driver
            // cannot export), or one that has signalled already: the work is
            // done, or the driver says so early (lavapipe 25.0 did, when its
            // queue was blocked on a wait): the CPU waits
            // for the work itself (at once when it is done), and there is
            // nothing left to attach or hand over: waiting for a signalled
            // fence only costs its users.
            pending.wait(self.timeout)?;
            completion = None;
        }
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

/// Submitted work: its fence, and every object it uses, kept until it is
/// done. Dropping it does not wait: the device recycles the objects once
/// the fence has signaled.
pub struct Pending {
    shared: Arc<DeviceShared>,
    /// Keeps the last-`Device` drain from running before this work is
    /// retired (else what it keeps alive would never be reaped).
    _device: Device,
    work: Option<Retired>,
    sync_file: Option<SyncFile>,
}

impl Pending {
    fn fence(&self) -> vk::Fence {
        self.work
            .as_ref()
            .map_or(vk::Fence::null(), |w| w.slot.fence)
    }

    /// Wait for the work; [`Error::Timeout`] after `timeout` (`None`: no
    /// limit, the caller's explicit choice).
    pub fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        wait_fence(&self.shared, self.fence(), timeout)
    }

    /// Whether the work is done.
    pub fn is_done(&self) -> Result<bool> {
        // SAFETY: a fence of this device.
        unsafe { self.shared.raw.get_fence_status(self.fence()) }
            .map_err(Error::vk("vkGetFenceStatus"))
    }

    /// Take `s` out of the objects to reuse: it is destroyed, not pooled,
    /// once the work is done.
    fn discard_semaphore(&mut self, s: PooledSemaphore) {
        if let Some(work) = &mut self.work {
            work.semaphores.retain(|k| k.raw != s.raw);
            work.discard.push(s);
        }
    }

    /// The completion as a sync_file, if [`Submission::signal_sync_file`]
    /// asked for one. `None` also when the work had already finished when
    /// submitted, the driver cannot export, or the device is a software
    /// one (the work is then done).
    pub fn take_sync_file(&mut self) -> Option<SyncFile> {
        self.sync_file.take()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            // What finished work kept alive is dropped here, outside the
            // device's lock.
            drop(self.shared.retire(work));
        }
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("fence", &self.fence())
            .finish()
    }
}
