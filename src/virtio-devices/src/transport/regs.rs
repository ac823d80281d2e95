//! virtio-mmio register map and device status bits (VIRTIO 1.2, 4.2.2 and 2.1).
//!
//! Offsets are relative to the device's MMIO base. Every register below
//! [`CONFIG`] is 32 bits wide and must be accessed with aligned 32-bit accesses.

/// Size of one device's MMIO window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

/// R: "virt" in little endian.
pub const MAGIC_VALUE: u64 = 0x000;
/// R: device version; 2 = modern (legacy version 1 is not supported).
pub const VERSION: u64 = 0x004;
/// R: virtio device id (1 = net, 2 = block).
pub const DEVICE_ID: u64 = 0x008;
/// R: subsystem vendor id.
pub const VENDOR_ID: u64 = 0x00c;
/// R: 32 feature bits of the page chosen by [`DEVICE_FEATURES_SEL`].
pub const DEVICE_FEATURES: u64 = 0x010;
/// W: which 32-bit page [`DEVICE_FEATURES`] shows.
pub const DEVICE_FEATURES_SEL: u64 = 0x014;
/// W: 32 accepted feature bits of the page chosen by [`DRIVER_FEATURES_SEL`].
pub const DRIVER_FEATURES: u64 = 0x020;
/// W: which 32-bit page [`DRIVER_FEATURES`] writes.
pub const DRIVER_FEATURES_SEL: u64 = 0x024;
/// W: the queue the Queue* registers refer to.
pub const QUEUE_SEL: u64 = 0x030;
/// R: maximum size of the selected queue (0: queue does not exist).
pub const QUEUE_NUM_MAX: u64 = 0x034;
/// W: size the driver chose for the selected queue.
pub const QUEUE_NUM: u64 = 0x038;
/// RW: the selected queue is ready for use.
pub const QUEUE_READY: u64 = 0x044;
/// W: queue notification; the value is the queue index.
pub const QUEUE_NOTIFY: u64 = 0x050;
/// R: pending interrupt causes ([`crate::interrupt::INT_VRING`], [`crate::interrupt::INT_CONFIG`]).
pub const INTERRUPT_STATUS: u64 = 0x060;
/// W: interrupt causes the driver has handled.
pub const INTERRUPT_ACK: u64 = 0x064;
/// RW: device status; writing 0 resets the device.
pub const STATUS: u64 = 0x070;
/// W: descriptor table address, low and high 32 bits.
pub const QUEUE_DESC_LOW: u64 = 0x080;
pub const QUEUE_DESC_HIGH: u64 = 0x084;
/// W: driver area (available ring) address.
pub const QUEUE_DRIVER_LOW: u64 = 0x090;
pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
/// W: device area (used ring) address.
pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
/// W: shared memory region selector.
pub const SHM_SEL: u64 = 0x0ac;
/// R: shared memory region length/base; all ones = the region does not exist.
pub const SHM_LEN_LOW: u64 = 0x0b0;
pub const SHM_LEN_HIGH: u64 = 0x0b4;
pub const SHM_BASE_LOW: u64 = 0x0b8;
pub const SHM_BASE_HIGH: u64 = 0x0bc;
/// RW: per-queue reset (only with VIRTIO_F_RING_RESET, which is never offered).
pub const QUEUE_RESET: u64 = 0x0c0;
/// R: changes whenever the device configuration space changes.
pub const CONFIG_GENERATION: u64 = 0x0fc;
/// RW: start of the device-specific configuration space.
pub const CONFIG: u64 = 0x100;

/// What [`MAGIC_VALUE`] reads: the bytes "virt".
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// What [`VERSION`] reads: the modern (non-legacy) interface.
pub const MMIO_VERSION_MODERN: u32 = 2;
/// What [`VENDOR_ID`] reads ("SHIM" in little endian); drivers don't match on it.
pub const MMIO_VENDOR_ID: u32 = 0x4d49_4853;

/// Device status bits (VIRTIO 1.2, 2.1).
pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
/// Set by the device: it hit an error and needs a reset.
pub const STATUS_DEVICE_NEEDS_RESET: u32 = 64;
/// Set by the driver: it gave up on the device.
pub const STATUS_FAILED: u32 = 128;

/// Feature bit every modern device and driver must negotiate.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
