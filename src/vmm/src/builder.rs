//! Builds a VM from a [`VmSpec`] and runs its event loop until it stops.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use virtio_devices::transport::{MmioTransport, MMIO_WINDOW_SIZE, QUEUE_NOTIFY_OFFSET};
use virtio_devices::{Interrupt, VirtioDevice};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::boot::{acpi, loader, params};
use vmm_config::sync::lock_unpoisoned;
use vmm_config::{NetBackendSpec, VmSpec, MAX_VCPUS, MAX_VIRTIO_DEVICES};

use crate::devices::bus::{Bus, BusDevice};
use crate::devices::legacy::acpi_pm::AcpiPmDevice;
use crate::devices::legacy::i8042::I8042;
use crate::devices::legacy::serial::{ConsoleOut, KvmThrCoalescing, SerialDevice};
use crate::devices::legacy::EventFdTrigger;
use crate::exit::{ExitHandle, ExitReason};
use crate::layout::*;
use crate::memory::{self, GuestMemory};
use crate::pause::{PauseControl, PauseEvents};
use crate::signals::SignalHandler;
use crate::stdin::StdinInput;
use crate::vstate::coalesced::CoalescedRing;
use crate::vstate::regs;
use crate::vstate::vcpu::{Vcpu, VcpuError};
use crate::vstate::vm::{Vm, VmError};

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    #[error(transparent)]
    Params(#[from] params::ParamsError),
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("ACPI tables: {0}")]
    Acpi(#[from] acpi::AcpiError),
    #[error("disk {id}: {source}")]
    Disk { id: String, source: virtio_devices::block::BlockError },
    #[error("network interface {id}: {source}")]
    Tap { id: String, source: virtio_devices::net::TapError },
    #[error("vsock: {0}")]
    Vsock(#[from] virtio_devices::vsock::BackendError),
    #[error("network interface {id}: {source}")]
    Pnic { id: String, source: pnic::shim::ShimError },
    #[error("cannot set up the event loop: {0}")]
    EventLoop(event_manager::Error),
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    /// A [`VmSpec`] made without its validation.
    #[error("{0}")]
    Invalid(vmm_config::ValidationError),
    #[error("device address conflict: {0}")]
    Bus(#[from] crate::devices::bus::BusOverlap),
}

/// Adapts the virtio-mmio transport to the MMIO bus.
struct MmioBusDevice(MmioTransport);

impl BusDevice for MmioBusDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.0.read(offset, data)
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.0.write(offset, data)
    }
}

/// Adapts the ACPI sleep registers to the port I/O bus.
struct PmBusDevice(AcpiPmDevice);

impl BusDevice for PmBusDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.0.read(offset, data)
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.0.write(offset, data)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceKind {
    Block,
    Net,
    Entropy,
    Vsock,
}

/// Every device's counters, by kind and id: what `GET /metrics` serves and
/// FlushMetrics writes. A kind without devices is left out.
#[derive(Debug, Default, serde::Serialize)]
pub struct VmMetrics {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub net: BTreeMap<String, serde_json::Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub block: BTreeMap<String, serde_json::Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub entropy: BTreeMap<String, serde_json::Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub vsock: BTreeMap<String, serde_json::Value>,
}

/// A virtio device as the running VMM keeps it: for metrics and shutdown.
struct AttachedDevice {
    id: String,
    kind: DeviceKind,
    dev: Arc<Mutex<dyn VirtioDevice>>,
}

/// What other threads (the API) may do to a running VM.
#[derive(Clone)]
pub struct VmmHandle {
    i8042: Arc<Mutex<I8042>>,
    devices: Arc<Vec<AttachedDevice>>,
    exit: Arc<ExitHandle>,
    metrics_path: Arc<Mutex<Option<PathBuf>>>,
    pause: Arc<PauseControl>,
}

/// How long a pause waits for the vCPUs and the event loop to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

impl VmmHandle {
    /// Stops the vCPUs and the devices (`PATCH /vm` Paused); returns once
    /// none runs. Pausing a paused VM does nothing.
    pub fn pause(&self) -> Result<(), crate::pause::PauseError> {
        self.pause.pause(PAUSE_TIMEOUT, true)
    }

    /// Lets a paused VM run again; resuming a running VM does nothing.
    pub fn resume(&self) {
        self.pause.resume()
    }

    pub fn is_paused(&self) -> bool {
        self.pause.is_paused()
    }

    pub fn send_ctrl_alt_del(&self) {
        lock_unpoisoned(&self.i8042).send_ctrl_alt_del();
    }

    /// Puts the image at `path` behind the running drive `drive_id`
    /// (Firecracker's `PATCH /drives/{id}` after boot); the guest is told its
    /// capacity may have changed.
    pub fn replace_drive(&self, drive_id: &str, path: &Path) -> Result<(), ReplaceDriveError> {
        let dev = self
            .devices
            .iter()
            .find(|d| d.kind == DeviceKind::Block && d.id == drive_id)
            .ok_or_else(|| ReplaceDriveError::NoSuchDrive(drive_id.to_string()))?;
        let mut dev = lock_unpoisoned(&dev.dev);
        let blk = dev
            .as_any_mut()
            .and_then(|d| d.downcast_mut::<virtio_devices::block::Block>())
            .ok_or_else(|| ReplaceDriveError::NoSuchDrive(drive_id.to_string()))?;
        blk.replace_disk(path).map_err(|source| ReplaceDriveError::Disk { id: drive_id.to_string(), source })
    }

    /// Sets the token buckets of the running drive `drive_id` (`None`:
    /// none), Firecracker's `PATCH /drives/{id}` with a `rate_limiter`.
    pub fn set_drive_rate_limiter(
        &self,
        drive_id: &str,
        limiter: Option<&vmm_config::RateLimiter>,
    ) -> Result<(), ReplaceDriveError> {
        let dev =
            self.device(DeviceKind::Block, drive_id).ok_or_else(|| ReplaceDriveError::NoSuchDrive(drive_id.into()))?;
        let mut dev = lock_unpoisoned(&dev.dev);
        let blk = dev
            .as_any_mut()
            .and_then(|d| d.downcast_mut::<virtio_devices::block::Block>())
            .ok_or_else(|| ReplaceDriveError::NoSuchDrive(drive_id.to_string()))?;
        blk.set_rate_limiter(limiter);
        Ok(())
    }

    /// Sets the RX and TX token buckets of the running interface
    /// `iface_id` (`None`: none), Firecracker's
    /// `PATCH /network-interfaces/{id}`.
    pub fn set_net_rate_limiters(
        &self,
        iface_id: &str,
        rx: Option<&vmm_config::RateLimiter>,
        tx: Option<&vmm_config::RateLimiter>,
    ) -> Result<(), NoSuchInterface> {
        let dev = self.device(DeviceKind::Net, iface_id).ok_or_else(|| NoSuchInterface(iface_id.into()))?;
        let mut dev = lock_unpoisoned(&dev.dev);
        let net = dev
            .as_any_mut()
            .and_then(|d| d.downcast_mut::<virtio_devices::net::Net>())
            .ok_or_else(|| NoSuchInterface(iface_id.into()))?;
        net.set_rate_limiters(rx, tx);
        Ok(())
    }

    fn device(&self, kind: DeviceKind, id: &str) -> Option<&AttachedDevice> {
        self.devices.iter().find(|d| d.kind == kind && d.id == id)
    }

    /// Every device's counters: `{"net": {id: {...}}, "block": {id: {...}}}`.
    pub fn metrics(&self) -> serde_json::Value {
        let mut out = VmMetrics::default();
        for d in self.devices.iter() {
            let m = lock_unpoisoned(&d.dev).metrics().unwrap_or(serde_json::Value::Null);
            let by_id = match d.kind {
                DeviceKind::Block => &mut out.block,
                DeviceKind::Net => &mut out.net,
                DeviceKind::Entropy => &mut out.entropy,
                DeviceKind::Vsock => &mut out.vsock,
            };
            by_id.insert(d.id.clone(), m);
        }
        serde_json::to_value(out).unwrap_or_default()
    }

    pub fn set_metrics_path(&self, path: Option<PathBuf>) {
        *lock_unpoisoned(&self.metrics_path) = path;
    }

    /// Writes the metrics JSON to the configured path (atomically: temp + rename).
    pub fn flush_metrics(&self) -> Result<(), MetricsWriteError> {
        let path = lock_unpoisoned(&self.metrics_path).clone();
        match path {
            Some(path) => {
                write_json_atomic(&path, &self.metrics()).map_err(|source| MetricsWriteError { path, source })
            }
            None => Ok(()),
        }
    }

    pub fn request_exit(&self, reason: ExitReason) {
        self.exit.request(reason)
    }
}

/// Why a running drive's image could not be replaced.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceDriveError {
    #[error("drive_id: no drive \"{0}\" in the running VM")]
    NoSuchDrive(String),
    #[error("drive {id}: {source}")]
    Disk { id: String, source: virtio_devices::block::BlockError },
}

/// PATCH of an interface the running VM does not have.
#[derive(Debug, thiserror::Error)]
#[error("iface_id: no network interface \"{0}\" in the running VM")]
pub struct NoSuchInterface(pub String);

/// The metrics file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write metrics to {}: {source}", path.display())]
pub struct MetricsWriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn write_json_atomic(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    crate::files::write_atomic(path, &serde_json::to_vec_pretty(value).unwrap_or_default())
}

/// The guest console and what may still hold its output when the VM stops.
struct Console {
    serial: Arc<Mutex<SerialDevice<ConsoleOut>>>,
    ring: Option<Arc<CoalescedRing>>,
    pio: Arc<Bus>,
}

impl Console {
    fn flush(&self) {
        crate::vstate::vcpu::replay(self.ring.as_deref(), &self.pio);
        lock_unpoisoned(&self.serial).flush_output();
    }
}

/// Lets console bytes bypass user space (see devices/legacy/serial.rs) when
/// KVM can coalesce port writes. Returns the ring the vCPUs replay.
fn coalesce_console(
    vm: &Vm,
    vcpus: &mut [Vcpu],
    serial: &Arc<Mutex<SerialDevice<ConsoleOut>>>,
) -> Option<Arc<CoalescedRing>> {
    let page = vm.coalesced_pio_ring_page()?;
    let ring = match vcpus.first()?.map_coalesced_ring(page) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("cannot map KVM's coalesced I/O ring ({e}); console bytes exit one by one");
            return None;
        }
    };
    for v in vcpus.iter_mut() {
        v.set_coalesced_ring(ring.clone());
    }
    let c = KvmThrCoalescing { vm: vm.shared_fd(), port: COM1_PORT };
    let mut console = lock_unpoisoned(serial);
    console.enable_coalescing(Box::new(c));
    if console.is_coalescing() {
        log::info!("console: KVM coalesces COM1 transmit writes");
    }
    drop(console);
    Some(ring)
}

pub struct Vmm {
    _vm: Vm,
    _mem: GuestMemory,
    console: Console,
    event_manager: EventManager<Subscriber>,
    handle: VmmHandle,
    vcpus: Vec<JoinHandle<()>>,
    vcpu_stop: Arc<AtomicBool>,
    /// The stop-signal fd, which a paused event loop still watches.
    signal_fd: std::os::fd::RawFd,
}

/// How long teardown waits for the vCPU threads to leave KVM_RUN.
const VCPU_JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Guest-visible name of the n-th virtio disk: vda, vdb, ...
fn disk_name(index: usize) -> String {
    format!("vd{}", (b'a' + index as u8) as char)
}

struct DeviceSlots {
    next: u64,
    next_irq: u32,
    /// `(base, len, gsi)` of each virtio-mmio window, for the DSDT. The guest
    /// must learn them from ACPI: with a hardware-reduced FADT Linux has no
    /// legacy IRQs, so `virtio_mmio.device=...:5` on the command line names a
    /// Linux IRQ 5 that does not exist and request_irq fails (-EINVAL).
    acpi: Vec<(u64, u64, u32)>,
}

impl Vmm {
    pub fn handle(&self) -> VmmHandle {
        self.handle.clone()
    }

    /// Runs the event loop until the VM stops; then joins the vCPU threads,
    /// stops every device (so no hardware writes guest memory any more),
    /// flushes metrics, and drops the devices (a pNIC backend's stop sequence
    /// runs in its drop) before returning.
    ///
    /// The main thread narrows itself to the VMM seccomp filter first.
    pub fn run(mut self) -> ExitReason {
        if let Err(e) = crate::seccomp::install(crate::seccomp::ThreadKind::Vmm) {
            self.handle.exit.request(ExitReason::VmmError(e.to_string()));
        }
        let reason = loop {
            if let Err(e) = self.event_manager.run_with_timeout(100) {
                break ExitReason::VmmError(format!("event loop failed: {e}"));
            }
            if let Some(r) = self.handle.exit.reason() {
                break r;
            }
            self.handle.pause.park_loop_if_paused(&self.handle.exit, &[self.signal_fd]);
        };
        // Said now, with its time, before the teardown below: the device
        // resets log lines of their own (the pNIC's "queues stopped on device
        // reset"), and a vCPU fault reported only after them read as if a
        // device reset had caused it.
        match &reason {
            ExitReason::VcpuError(m) | ExitReason::VmmError(m) => log::error!("stopping the VM: {m}"),
            r => log::info!("stopping the VM: {r:?}"),
        }
        // Parked vCPUs must see the stop.
        self.handle.pause.resume();
        // No vCPU may touch a device (or the console) from here on.
        let left =
            crate::vstate::vcpu::stop_and_join(std::mem::take(&mut self.vcpus), &self.vcpu_stop, VCPU_JOIN_TIMEOUT);
        if left > 0 {
            log::error!("{left} vCPU thread(s) did not stop within {VCPU_JOIN_TIMEOUT:?}; exiting without them");
        }
        for d in self.handle.devices.iter() {
            lock_unpoisoned(&d.dev).reset();
        }
        log::info!("VM stopped: vCPUs joined, {} device(s) reset", self.handle.devices.len());
        if let Err(e) = self.handle.flush_metrics() {
            log::error!("{e}");
        }
        self.console.flush();
        // The event loop holds the devices as subscribers: drop it now, so the
        // devices go when the last handle does (VmmHandle::release).
        drop(self.event_manager);
        reason
    }
}

fn attach_virtio<T>(
    vm: &Vm,
    mem: &GuestMemory,
    mmio: &mut Bus,
    em: &mut EventManager<Subscriber>,
    slots: &mut DeviceSlots,
    dev: T,
) -> Result<Arc<Mutex<dyn VirtioDevice>>, BuildError>
where
    T: VirtioDevice + MutEventSubscriber + Send + 'static,
{
    let base = slots.next;
    let irq = slots.next_irq;
    let dev = Arc::new(Mutex::new(dev));
    for (i, evt) in dev.lock().unwrap().queue_events().iter().enumerate() {
        vm.register_mmio_ioevent(evt, base + QUEUE_NOTIFY_OFFSET, i as u32)?;
    }
    let irqfd = EventFd::new(EFD_NONBLOCK).map_err(BuildError::EventFd)?;
    vm.register_irqfd(&irqfd, irq)?;
    let as_virtio: Arc<Mutex<dyn VirtioDevice>> = dev.clone();
    let transport = MmioTransport::new(as_virtio.clone(), mem.clone(), Arc::new(Interrupt::new(irqfd)));
    mmio.insert(Arc::new(Mutex::new(MmioBusDevice(transport))), base, MMIO_WINDOW_SIZE)?;
    em.add_subscriber(dev as Subscriber);
    slots.acpi.push((base, MMIO_WINDOW_SIZE, irq));
    slots.next += MMIO_DEVICE_STRIDE;
    slots.next_irq += 1;
    Ok(as_virtio)
}

// The configuration's limits fit what the VMM can wire up.
const _: () = assert!(MAX_VCPUS <= u8::MAX as u32);
const _: () = assert!(VIRTIO_IRQ_BASE as usize + MAX_VIRTIO_DEVICES <= acpi::IOAPIC_PINS as usize);

/// How the host side of a VM may be set up (process-wide choices, not part
/// of the VM's configuration).
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Accept host block devices as disk images (`--allow-block-devices`);
    /// off, only regular files are.
    pub allow_block_devices: bool,
    /// The metadata document the interfaces of `mmds-config` serve (the
    /// one the API writes); `None`: an empty one.
    pub mmds: Option<Arc<Mutex<mmds::Mmds>>>,
}

/// Checks every input file the user named before any KVM or device state is
/// created, so the first error reported is about the user's own input. Each
/// is opened as it will be (no symlink followed, a FIFO fails at once) and
/// checked on the descriptor. (The configuration's own rules were checked
/// when the [`VmSpec`] was made.)
fn preflight(spec: &VmSpec, opts: &BuildOptions) -> Result<(), BuildError> {
    let boot = &spec.boot_source;
    crate::files::open_input(&boot.kernel_image_path, false, false)
        .map_err(|err| loader::LoadError::KernelOpen { path: boot.kernel_image_path.display().to_string(), err })?;
    if let Some(i) = &boot.initrd_path {
        crate::files::open_input(i, false, false)
            .map_err(|err| loader::LoadError::InitrdOpen { path: i.display().to_string(), err })?;
    }
    for d in &spec.drives {
        virtio_devices::block::Disk::open_with(&d.path_on_host, d.is_read_only, opts.allow_block_devices)
            .map_err(|source| BuildError::Disk { id: d.drive_id.clone(), source })?;
    }
    Ok(())
}

/// Builds the VM `spec` describes and starts its vCPUs; [`Vmm::run`] runs it.
pub fn build(spec: &VmSpec) -> Result<Vmm, BuildError> {
    build_with(spec, &BuildOptions::default())
}

/// [`build`] with host-side options.
pub fn build_with(spec: &VmSpec, opts: &BuildOptions) -> Result<Vmm, BuildError> {
    preflight(spec, opts)?;
    let boot = &spec.boot_source;
    // At most MAX_VCPUS (checked above to fit a u8), as VmSpec guarantees.
    let vcpu_count = spec.machine_config.vcpu_count as u8;
    let vm = Vm::new()?;
    vm.check_vcpu_count(vcpu_count)?;
    let mem = memory::create_guest_memory(spec.machine_config.mem_size_mib)?;
    vm.set_memory(&mem)?;
    let kernel = loader::load_kernel(&mem, &boot.kernel_image_path)?;
    let initrd = boot.initrd_path.as_deref().map(|p| loader::load_initrd(&mem, p, &kernel)).transpose()?;

    let exit = Arc::new(ExitHandle::new().map_err(BuildError::EventFd)?);
    let mut em: EventManager<Subscriber> = EventManager::new().map_err(BuildError::EventLoop)?;
    let mut pio = Bus::default();
    let mut mmio = Bus::default();

    // Legacy devices.
    let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(BuildError::EventFd)?;
    vm.register_irqfd(&serial_irq, SERIAL_IRQ)?;
    let input_drained = EventFd::new(EFD_NONBLOCK).map_err(BuildError::EventFd)?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(EventFdTrigger(serial_irq), input_drained, ConsoleOut)));
    pio.insert(serial.clone(), u64::from(COM1_PORT), u64::from(COM_PORT_LEN))?;
    let kbd_irq = EventFd::new(EFD_NONBLOCK).map_err(BuildError::EventFd)?;
    vm.register_irqfd(&kbd_irq, I8042_KBD_IRQ)?;
    let i8042 = Arc::new(Mutex::new(I8042::new(EventFdTrigger(kbd_irq), exit.clone())));
    pio.insert(i8042.clone(), u64::from(I8042_PORT), u64::from(I8042_PORT_LEN))?;
    let poweroff_evt = EventFd::new(EFD_NONBLOCK).map_err(BuildError::EventFd)?;
    let pm =
        Arc::new(Mutex::new(PmBusDevice(AcpiPmDevice::new(poweroff_evt.try_clone().map_err(BuildError::EventFd)?))));
    pio.insert(pm, u64::from(ACPI_PM_PORT), u64::from(ACPI_PM_PORT_LEN))?;

    // virtio devices; VmSpec puts the root drive first, so it is /dev/vda.
    let mut cmdline = boot.boot_args_or_default().to_string();
    let mut slots = DeviceSlots { next: VIRTIO_MMIO_START, next_irq: VIRTIO_IRQ_BASE, acpi: Vec::new() };
    let mut devices = Vec::new();
    if let Some(root) = spec.root_drive() {
        if !cmdline.split_whitespace().any(|w| w.starts_with("root=")) {
            let mode = if root.is_read_only { "ro" } else { "rw" };
            cmdline.push_str(&format!(" root=/dev/{} {mode}", disk_name(0)));
        }
    }
    for d in &spec.drives {
        let id = &d.drive_id;
        let blk = virtio_devices::block::Block::new(virtio_devices::block::BlockConfig {
            path: d.path_on_host.clone(),
            read_only: d.is_read_only,
            id: id.clone(),
            allow_block_device: opts.allow_block_devices,
        })
        .map_err(|source| BuildError::Disk { id: id.clone(), source })?;
        let mut blk = blk;
        blk.set_rate_limiter(d.rate_limiter.as_ref());
        let dev = attach_virtio(&vm, &mem, &mut mmio, &mut em, &mut slots, blk)?;
        devices.push(AttachedDevice { id: id.clone(), kind: DeviceKind::Block, dev });
    }
    // The metadata service, with the version and format the config asks.
    let mmds_store = spec.mmds_config.as_ref().map(|c| {
        let store = opts.mmds.clone().unwrap_or_default();
        let mut s = store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.set_version(c.version);
        s.set_imds_compat(c.imds_compat);
        drop(s);
        store
    });
    for n in &spec.network_interfaces {
        let id = &n.iface_id;
        // One MAC for both the guest's virtio config and the pNIC's filter:
        // the configured one (random if none), except on an SR-IOV VF, whose
        // MAC is its PF's choice (the shim refuses a different configured one).
        let guest_mac = n.guest_mac.map(|m| m.octets());
        // VmSpec guarantees exactly one backend; `backend()` is where that rule lives.
        let (backend, mac): (Box<dyn virtio_devices::net::backend::NetBackend>, _) = match n.backend() {
            Ok(NetBackendSpec::Tap(name)) => {
                let mut tap = virtio_devices::net::TapBackend::open(name)
                    .map_err(|source| BuildError::Tap { id: id.clone(), source })?;
                if let Some(mtu) = n.mtu {
                    tap.set_mtu(mtu).map_err(|source| BuildError::Tap { id: id.clone(), source })?;
                }
                (Box::new(tap), guest_mac.unwrap_or_else(virtio_devices::net::config::random_mac))
            }
            Ok(NetBackendSpec::Pnic(bdf)) => {
                let opts = pnic::shim::PnicOptions {
                    dma: n.pnic_dma.unwrap_or_default(),
                    mtu: n.mtu.unwrap_or(vmm_config::MTU_DEFAULT),
                };
                pnic::shim::open_vfio_backend(&bdf.to_string(), &mem, guest_mac, opts)
                    .map_err(|source| BuildError::Pnic { id: id.clone(), source })?
            }
            Err(e) => return Err(BuildError::Invalid(e)),
        };
        let mut net = virtio_devices::net::Net::new(backend, Some(mac), id.clone());
        if let Some(mtu) = n.mtu {
            net.set_mtu(mtu);
        }
        net.set_rate_limiters(n.rx_rate_limiter.as_ref(), n.tx_rate_limiter.as_ref());
        if let (Some(c), Some(store)) = (&spec.mmds_config, &mmds_store) {
            if c.network_interfaces.contains(id) {
                net.set_mmds(mmds::MmdsStack::new(store.clone(), c.ipv4()));
                log::info!("virtio-net {id}: MMDS {:?} at {}", c.version, c.ipv4());
            }
        }
        let dev = attach_virtio(&vm, &mem, &mut mmio, &mut em, &mut slots, net)?;
        devices.push(AttachedDevice { id: id.clone(), kind: DeviceKind::Net, dev });
    }
    if let Some(entropy) = &spec.entropy {
        let mut rng = virtio_devices::rng::Rng::new().map_err(BuildError::EventFd)?;
        rng.set_rate_limiter(entropy.rate_limiter.as_ref());
        let dev = attach_virtio(&vm, &mem, &mut mmio, &mut em, &mut slots, rng)?;
        devices.push(AttachedDevice { id: "entropy".into(), kind: DeviceKind::Entropy, dev });
    }
    if let Some(v) = &spec.vsock {
        crate::seccomp::allow_vsock_sockets();
        let vsock = virtio_devices::vsock::Vsock::new(u64::from(v.guest_cid), &v.uds_path)?;
        let dev = attach_virtio(&vm, &mem, &mut mmio, &mut em, &mut slots, vsock)?;
        devices.push(AttachedDevice { id: "vsock".into(), kind: DeviceKind::Vsock, dev });
    }

    // Boot tables, ACPI and the zero page.
    regs::write_boot_tables(&mem)?;
    let layout = acpi::AcpiLayout {
        num_cpus: vcpu_count,
        pm_port: ACPI_PM_PORT,
        mmio_devices: slots.acpi.clone(),
        serial: true,
    };
    let rsdp = acpi::create_acpi_tables(&mem, &layout)?;
    params::write_boot_params(&mem, &kernel, initrd.as_ref(), &cmdline, Some(rsdp))?;
    log::info!("kernel command line: {cmdline}");

    // Event sources owned by the VMM itself.
    em.add_subscriber(Arc::new(Mutex::new(StdinInput::new(serial.clone()).map_err(BuildError::EventFd)?)) as Subscriber);
    let signals = SignalHandler::new(exit.clone()).map_err(BuildError::EventFd)?;
    let signal_fd = std::os::fd::AsRawFd::as_raw_fd(&signals);
    em.add_subscriber(Arc::new(Mutex::new(signals)) as Subscriber);
    let pause = Arc::new(PauseControl::new().map_err(BuildError::EventFd)?);
    em.add_subscriber(Arc::new(Mutex::new(PauseEvents(pause.clone()))) as Subscriber);
    em.add_subscriber(Arc::new(Mutex::new(crate::exit::ExitEvents::new(exit.clone(), poweroff_evt))) as Subscriber);

    let pio = Arc::new(pio);
    let mmio = Arc::new(mmio);
    let vcpu_stop = Arc::new(AtomicBool::new(false));
    let mut vcpus = Vec::new();
    for id in 0..vcpu_count {
        let vcpu = Vcpu::new(&vm, id)?;
        vcpu.configure(&vm, vcpu_count, kernel.entry.0)?;
        vcpus.push(vcpu);
    }
    let ring = coalesce_console(&vm, &mut vcpus, &serial);
    let mut threads = Vec::new();
    for v in vcpus {
        match v.spawn(pio.clone(), mmio.clone(), exit.clone(), vcpu_stop.clone(), pause.clone()) {
            Ok(t) => threads.push(t),
            Err(e) => {
                // Those already started must not outlive the build that failed.
                crate::vstate::vcpu::stop_and_join(threads, &vcpu_stop, VCPU_JOIN_TIMEOUT);
                return Err(e.into());
            }
        }
    }

    Ok(Vmm {
        _vm: vm,
        _mem: mem,
        console: Console { serial, ring, pio },
        event_manager: em,
        handle: VmmHandle {
            i8042,
            devices: Arc::new(devices),
            exit,
            metrics_path: Arc::new(Mutex::new(spec.metrics.as_ref().map(|m| m.metrics_path.clone()))),
            pause,
        },
        vcpus: threads,
        vcpu_stop,
        signal_fd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_group_by_kind_and_leave_out_empty_kinds() {
        let mut m = VmMetrics::default();
        assert_eq!(serde_json::to_value(&m).unwrap(), serde_json::json!({}));
        m.block.insert("rootfs".into(), serde_json::json!({"reads": 1}));
        assert_eq!(serde_json::to_value(&m).unwrap(), serde_json::json!({"block": {"rootfs": {"reads": 1}}}));
    }

    #[test]
    fn disk_names() {
        assert_eq!(disk_name(0), "vda");
        assert_eq!(disk_name(2), "vdc");
    }
}
